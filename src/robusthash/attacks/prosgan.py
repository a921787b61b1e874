"""ProS-GAN (Wang et al., Prototype-supervised adversarial network for targeted attack of deep hashing, CVPR 2021):
a generator trained once against the attacked model, then one forward pass per adversarial image."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from robusthash.attacks.base import Attack, CodeBank, derive_seed, frozen, register_attack
from robusthash.codes import binarize
from robusthash.data import iterate_batches
from robusthash.errors import UserError
from robusthash.models.fixed_rows import in_blocks
from robusthash.models.prosgan import LAYOUTS, OfficialProSGANGenerator, build_networks
from robusthash.models.prototype import PrototypeNet, train_prototype_net
from robusthash.runtime import atomic_torch_save, model_fingerprint, safe_load

UPDATE_ORDERS = ("generator-first", "discriminator-first")


def network_layout(layout: str, size: int) -> str:
    """The layout ``"auto"`` resolves to: the official one at the official 224 px, the compact one below."""
    return layout if layout != "auto" else ("official" if size == 224 else "compact")


def migrate_settings(settings: dict[str, Any], size: int) -> dict[str, Any]:
    """Settings stored before the layout and the update order were options: those runs had the compact layout
    (what ``"auto"`` gives below 224 px), the generator first, and ``rec_weight`` on [0, 1] images (4x the
    official units)."""
    if "layout" in settings:
        return settings
    return {
        **settings,
        "rec_weight": settings["rec_weight"] / 4,
        "layout": "auto" if size < 224 else "compact",
        "update_order": "generator-first",
    }


@register_attack
class ProSGAN(Attack):
    """Targeted: ``x' = G(x, feature(target label))``, G trained against the attacked model in :meth:`fit`.

    :meth:`fit` (timed apart from crafting; the evaluation reports seconds per image with and without it):

    1. The prototype network (PrototypeNet with a label head) on the reference bank, ProS-GAN's objective
       (:func:`~robusthash.models.prototype.prosgan_prototype_loss`), ``prototype_steps`` steps of batch 64.
    2. Generator and discriminator (:mod:`robusthash.models.prosgan`) on the training images, batch 24, Adam 1e-4
       (0.5, 0.999), ``epochs`` epochs: constant for the first half, then linear decay to 0. Target labels drawn
       uniformly from the database's distinct label rows. LSGAN losses with the official flags (real 0, fake 1):
       D, updated every 3rd step, ``1/2 [MSE(D(x), [y, 0]) + MSE(D(G(x)), [y_t, 1])]``; G
       ``rec_weight * MSE(2 G(x) - 1, 2 x - 1) + 5 (1 - mean(f(G(x)) o sign(h_p))) + MSE(D(G(x)), [y_t, 0])``:
       the reconstruction on [-1, 1] images as the official code, so ``rec_weight`` is in its units (it uses
       50 for NUS-WIDE and MS-COCO, 100 for FLICKR-25K). ``update_order``: ``"discriminator-first"`` (the
       official loop: D on the batch's G(x), then G against the updated D) or ``"generator-first"``.
       ``layout`` (:mod:`robusthash.models.prosgan`): ``"official"``, ``"compact"``, or ``"auto"`` (the
       official layout at 224 px, the compact one at smaller sizes). Defaults measured: docs/choices.md,
       "ProS-GAN".

    The official code bounds nothing: G outputs the whole image. By default (``bounded=False``, faithful) the
    suite's eps is ignored and the measured L-inf / L2 are reported beside every other attack's; ``bounded=True``
    clamps G's output into the eps-ball. ``checkpoint`` (a path) saves the trained networks after every epoch
    (atomically; read back with ``weights_only=True``): a later fit against the same model (by weight
    fingerprint) and settings resumes or reuses it. Paper recipe: ``epochs=100``, ``prototype_steps=30000``;
    the embedded benchmark uses a few epochs (documented there).
    """

    name: ClassVar[str] = "prosgan"
    display_name: ClassVar[str] = "ProS-GAN"
    targeted: ClassVar[bool] = True
    test_options: ClassVar[dict[str, Any]] = {"epochs": 3, "prototype_steps": 100}
    paper: ClassVar[str] = (
        "Wang et al., Prototype-supervised adversarial network for targeted attack of deep hashing, CVPR 2021"
    )

    def __init__(
        self,
        model: Any,
        *,
        epochs: int = 100,
        train_batch: int = 24,
        lr: float = 1e-4,
        rec_weight: float = 12.5,
        prototype_steps: int = 30_000,
        bounded: bool = False,
        checkpoint: str | None = None,
        update_order: str = "generator-first",
        layout: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if update_order not in UPDATE_ORDERS:
            raise UserError(f"update_order must be one of {', '.join(UPDATE_ORDERS)}, got {update_order!r}")
        if layout not in ("auto", *LAYOUTS):
            raise UserError(f"layout must be one of auto, {', '.join(LAYOUTS)}, got {layout!r}")
        self.update_order, self.layout = update_order, layout
        for what, value in (
            ("epochs", epochs),
            ("train_batch", train_batch),
            ("prototype_steps", prototype_steps),
        ):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{what} must be a positive integer, got {value!r}")
        if not (isinstance(rec_weight, (int, float)) and math.isfinite(rec_weight) and rec_weight >= 0):
            raise UserError(f"rec_weight must be a finite number >= 0, got {rec_weight!r}")
        self.epochs, self.train_batch, self.lr = epochs, train_batch, float(lr)
        self.rec_weight, self.prototype_steps = float(rec_weight), prototype_steps
        self.bounded, self.checkpoint = bounded, checkpoint
        self.budget = self.eps  # the suite's eps: the ball of a bounded run
        self.prototype: PrototypeNet | None = None
        self.generator_net: nn.Module | None = None

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Bounded: the eps-ball, as every attack. Unbounded (as published): only [0, 1]; G's image is used as
        it is (its size is reported as measured L-inf and L2)."""
        return super().project(x_adv, x) if self.bounded else x_adv.clamp(0.0, 1.0)

    # ----------------------------------------------------------------- training
    def _settings(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "train_batch": self.train_batch,
            "lr": self.lr,
            "rec_weight": self.rec_weight,
            "prototype_steps": self.prototype_steps,
            "seed": self.seed,
            "model": model_fingerprint(self.model),
            "layout": self.layout,
            "update_order": self.update_order,
        }

    def fit(
        self, reference: CodeBank | None = None, quiet: bool = True, train: Dataset | None = None
    ) -> ProSGAN:
        """Train the prototype network, then G and D against the model (see the class docstring)."""
        if train is None:
            raise UserError("ProS-GAN's fit needs the training images (fit(train=data.train))")
        bank = reference or self.require_reference()
        device = next(self.model.parameters()).device
        state = self._resume_state()
        prior = state.get("train_seconds") if state is not None else 0.0  # None: stored before it was kept
        if state is not None and state["epoch"] >= self.epochs:
            self.load_fitted_state(state)
            self.recorded_fit_seconds = None if prior is None else float(prior)
            return self
        began, spent = time.perf_counter(), prior
        rng = torch.Generator().manual_seed(derive_seed(self.seed, "fit"))
        candidates = self.target_candidates()
        prototype = self._prototype(bank, device, rng, quiet, state)
        channels, size = train.batch(torch.arange(1))[0].shape[1:3]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "networks"))
            layout = network_layout(self.layout, size)
            gen, disc = build_networks(layout, channels, size, candidates.shape[1])
            gen, disc = gen.to(device), disc.to(device)
        opt_g = torch.optim.Adam(gen.parameters(), lr=self.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=self.lr, betas=(0.5, 0.999))
        start = 0
        if state is not None:
            gen.load_state_dict(state["generator"])
            disc.load_state_dict(state["discriminator"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            rng.set_state(state["rng"])
            start = int(state["epoch"])
        with frozen(self.model):
            for epoch in tqdm(range(start, self.epochs), desc="ProS-GAN", disable=quiet, leave=False):
                decay = max(self.epochs - self.epochs // 2, 1)
                factor = 1.0 if epoch < self.epochs // 2 else 1.0 - (epoch - self.epochs // 2) / decay
                for opt in (opt_g, opt_d):
                    for group in opt.param_groups:
                        group["lr"] = self.lr * factor
                for step, (x, y, _) in enumerate(
                    iterate_batches(train, self.train_batch, shuffle=True, generator=rng)
                ):
                    target = candidates[torch.randint(len(candidates), (x.shape[0],), generator=rng)]
                    self.train_step(
                        gen,
                        disc,
                        opt_g,
                        opt_d,
                        prototype,
                        x.to(device),
                        y.to(device),
                        target.to(device),
                        update_discriminator=step % 3 == 0,
                    )
                spent = None if prior is None else float(prior) + time.perf_counter() - began
                if self.checkpoint:
                    atomic_torch_save(
                        {
                            "settings": self._settings(),
                            "epoch": epoch + 1,
                            "rng": rng.get_state(),
                            "train_seconds": spent,
                            "generator": gen.state_dict(),
                            "discriminator": disc.state_dict(),
                            "opt_g": opt_g.state_dict(),
                            "opt_d": opt_d.state_dict(),
                            **self._networks_state(prototype, gen),
                        },
                        self.checkpoint,
                    )
        self.prototype, self.generator_net = prototype.eval(), gen.eval()
        self.recorded_fit_seconds = spent  # as stored with the last epoch: a reuse reports the same
        return self

    def train_step(
        self,
        gen: nn.Module,
        disc: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        prototype: PrototypeNet,
        x: Tensor,
        y: Tensor,
        target: Tensor,
        update_discriminator: bool = True,
    ) -> dict[str, float]:
        """One generator step and, when asked, a discriminator step on the same G(x) (before or after the
        generator's, by ``update_order``); returns both losses."""
        with torch.no_grad():
            feature = prototype.feature(target)
            code = binarize(prototype.hashing(feature))
        real = torch.zeros(x.shape[0], 1, device=x.device)
        x_adv = gen(x, feature)
        loss_d = torch.zeros(())

        def discriminator_step() -> Tensor:
            fake = torch.ones_like(real)
            loss = 0.5 * (
                F.mse_loss(disc(x), torch.cat([y, real], 1))
                + F.mse_loss(disc(x_adv.detach()), torch.cat([target, fake], 1))
            )
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            return loss

        if update_discriminator and self.update_order == "discriminator-first":
            loss_d = discriminator_step()
        logits = self.model.preactivation(x_adv)
        hamming_term = 1 - (torch.tanh(logits) * code).mean()
        loss_g = (
            self.rec_weight * F.mse_loss(x_adv * 2 - 1, x * 2 - 1)
            + 5 * hamming_term
            + F.mse_loss(disc(x_adv), torch.cat([target, real], 1))
        )
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if update_discriminator and self.update_order == "generator-first":
            loss_d = discriminator_step()
        return {"generator": float(loss_g.detach()), "discriminator": float(loss_d.detach())}

    def _prototype(
        self,
        bank: CodeBank,
        device: torch.device,
        rng: torch.Generator,
        quiet: bool,
        state: dict[str, Any] | None,
    ) -> PrototypeNet:
        if state is not None:
            net = PrototypeNet(int(state["num_classes"]), int(state["bits"]), label_head=True).to(device)
            net.load_state_dict(state["prototype"])
            return net.eval()
        candidates = self.target_candidates()
        return train_prototype_net(
            bank.codes.to(device),
            bank.labels.to(device),
            candidates,
            self.prototype_steps,
            batch_size=64,
            generator=rng,
            quiet=quiet,
            objective="prosgan",
        )

    def _resume_state(self) -> dict[str, Any] | None:
        if not self.checkpoint or not Path(self.checkpoint).is_file():
            return None
        state = safe_load(self.checkpoint, "ProS-GAN checkpoint")
        stored = migrate_settings(state.get("settings") or {"rec_weight": 0.0}, int(state.get("size", 0)))
        if stored != self._settings():
            raise UserError(
                f"{self.checkpoint} holds a ProS-GAN trained with other settings or against another "
                "model; choose another checkpoint path"
            )
        return state

    # ----------------------------------------------------------------- fitted state
    @property
    def is_fitted(self) -> bool:
        return self.generator_net is not None

    @staticmethod
    def _networks_state(prototype: PrototypeNet, gen: nn.Module) -> dict[str, Any]:
        return {
            "prototype": prototype.state_dict(),
            "num_classes": prototype.num_classes,
            "bits": prototype.bits,
            "generator": gen.state_dict(),
            "channels": gen.channels,
            "size": gen.size,
            "layout": "official" if isinstance(gen, OfficialProSGANGenerator) else "compact",
        }

    def fitted_state(self) -> dict[str, Any]:
        if self.prototype is None or self.generator_net is None:
            raise UserError("ProS-GAN is not fitted yet: call fit() first")
        return self._networks_state(self.prototype, self.generator_net)

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        self.prototype = PrototypeNet(int(state["num_classes"]), int(state["bits"]), label_head=True).to(
            device
        )
        self.prototype.load_state_dict(state["prototype"])
        layout = str(state.get("layout", "compact"))  # stored before layouts existed: compact
        self.generator_net = build_networks(layout, int(state["channels"]), int(state["size"]))[0].to(device)
        self.generator_net.load_state_dict(state["generator"])
        self.prototype.eval()
        self.generator_net.eval()

    # ----------------------------------------------------------------- crafting
    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        if self.prototype is None or self.generator_net is None:
            raise UserError("ProS-GAN needs fit() first: it trains its generator against the model")
        assert targets is not None
        generator, prototype = self.generator_net, self.prototype
        with (
            torch.no_grad()
        ):  # fixed blocks, like the model's calls: a query's image does not depend on its batch
            return in_blocks(
                lambda xs, ts: generator(xs, prototype.feature(ts)),
                self.block_rows,
                x,
                targets.to(x.device, x.dtype),
            )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "epochs": self.epochs,
            "train_batch": self.train_batch,
            "lr": self.lr,
            "rec_weight": self.rec_weight,
            "prototype_steps": self.prototype_steps,
            "update_order": self.update_order,
            "layout": self.layout,
            "bounded": self.bounded,
            "budget": self.budget,
            "checkpoint": self.checkpoint,
            "eps": self.eps if self.bounded else 1.0,
        }
