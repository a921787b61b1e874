"""Adversarial training: one :class:`AdversarialTraining` method per defence (how a training step makes and
uses adversarial examples), run by the one training loop of :mod:`robusthash.training`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from robusthash.attacks import derive_seed
from robusthash.checkpoint import Checkpoint
from robusthash.config import check_finite, from_mapping, option, recorded_as
from robusthash.data import DatasetSplits
from robusthash.defenses.codebank import TrainingCodeBank
from robusthash.errors import UserError
from robusthash.losses import create_loss
from robusthash.models import HashModel
from robusthash.records import ModelRecord
from robusthash.registry import Registry
from robusthash.runtime import check_precision, check_seed, environment, model_fingerprint, seed_everything
from robusthash.training import TrainingMethod, TrainingPlan, run_training

# options that DefenseConfig held before each defence had its own (``method_options``): read from earlier records
LEGACY_OPTIONS: tuple[str, ...] = ("lam", "similarity")


@recorded_as("defense")
@dataclass
class DefenseConfig:
    """Settings of an adversarial-training run. ``None`` means the method's published default.

    CgAT (CgAT sec. 4.1): SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 32, PGD T = 7 of 2/255 in an
    8/255 ball, lambda = 1, 30 epochs; the learning rate drops 10x at 1/2 and 3/4 of the steps (the authors'
    code, for every method). The embedded default runs 3 epochs, which keeps ``robusthash demo`` within minutes
    (docs/choices.md, "Adversarial training").
    """

    method: str = option("cgat", "adversarial-training method")
    epochs: int = option(3, "adversarial-training epochs (the paper: 30)")
    batch_size: int = option(32, "images per training batch")
    optimizer: str | None = option(None, "sgd or adam (default: the method's published one)")
    lr: float | None = option(None, "learning rate (default: the method's published one)")
    momentum: float | None = option(None, "SGD momentum (default: the method's published one)")
    weight_decay: float | None = option(None, "weight decay (default: the method's published one)")
    eps: float = option(8 / 255, "L-inf budget of the training attack (pixel levels of 255)", cli_scale=255)
    steps: int = option(7, "PGD steps of the training attack")
    step_size: float = option(2 / 255, "PGD step of the training attack (pixel levels)", cli_scale=255)
    replays: int = option(
        1,
        "free adversarial training (Shafahi et al. 2019): optimiser steps per batch, the perturbation carried "
        "over and moved by eps along the sign of each step's own input gradient, no inner attack (steps and "
        "step_size unused); 1: off",
    )
    carry: bool = option(
        False,
        "start each item's training attack from its perturbation of the previous epoch instead of a random "
        "start (a random start the first time): ATTA's accumulated perturbation (Zheng et al., CVPR 2020); "
        "with one step of eps, FGSM with the epoch prior (Jia et al., ECCV 2022)",
    )
    method_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": 'the defence\'s own options, e.g. {"lam": 0.5, "similarity": "dice"} for cgat and pga-at; '
            "robusthash datasets lists each defence's"
        },
    )
    seed: int = option(0, "seed of the shuffling and the training attacks")
    precision: str = option("fp32", "fp32, or bf16: autocast of the forward and backward passes")

    def validate(self) -> None:
        check_seed(self.seed)
        check_precision(self.precision)
        DEFENSES.get(self.method).parse_options(self.method_options)
        check_finite(
            lr=self.lr,
            eps=self.eps,
            step_size=self.step_size,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise UserError(f"batch size must be >= 2 (batch norm needs two items), got {self.batch_size}")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in (None, "sgd", "adam"):
            raise UserError(f"unknown optimizer {self.optimizer!r}; valid: sgd, adam")
        if not 0 <= self.eps <= 1:
            raise UserError(f"eps must lie in [0, 1] (image units), got {self.eps}")
        if self.steps < 0 or self.step_size <= 0:
            raise UserError(f"steps must be >= 0 and step_size > 0, got {self.steps} and {self.step_size}")
        if self.replays < 1:
            raise UserError(f"replays must be >= 1 (1: no free adversarial training), got {self.replays}")
        if self.replays > 1 and not DEFENSES.get(self.method).free:
            free = ", ".join(name for name in DEFENSES.names() if DEFENSES.get(name).free)
            raise UserError(
                f"defence {self.method} cannot train free (replays > 1): its training loss is not its attack's "
                f"objective; valid: {free}, or replays 1 with fewer --steps for a cheaper attack"
            )

        if self.carry and self.replays > 1:
            raise UserError(
                "carry and replays > 1 do not mix: free training already carries its perturbation"
            )

    @classmethod
    def canonical(cls, stored: Mapping[str, Any]) -> dict[str, Any]:
        """A stored config in today's form, its method's options filled in at their defaults (what "the same
        defence" compares; see :func:`~robusthash.config.restore`). Records written before each defence had its
        own options kept ``lam`` and ``similarity`` here: they become the options of the defences that read
        them, and are dropped for those that never did."""
        stored = dict(stored)
        legacy = {k: stored.pop(k) for k in LEGACY_OPTIONS if k in stored}
        config = cls(**stored)
        method = DEFENSES.get(config.method)
        known = {f.name for f in fields(method.Options)}
        given = {**{k: v for k, v in legacy.items() if k in known}, **config.method_options}
        momentum, decay = method.default_sgd
        return {
            **asdict(config),
            "momentum": momentum if config.momentum is None else config.momentum,
            "weight_decay": decay if config.weight_decay is None else config.weight_decay,
            "method_options": asdict(method.parse_options(given)),
        }


@dataclass
class NoOptions:
    """The options of a defence that has none of its own."""

    def validate(self) -> None:
        """Nothing to check."""


class AdversarialTraining(TrainingMethod):
    """Base class of the defences. Subclasses set ``name``, ``display_name`` and ``default_optimizer`` and
    implement :meth:`batch_loss`.

    Shared by all: the dynamic code bank of the training set (CgAT Algorithm 1, lines 1 and 7), the method's
    published optimiser, the learning rate dropped 10x at 1/2 and 3/4 of the steps (the authors' code), and
    :meth:`attack_seed`, which gives each step's training attack its own seed so that the random starts of an
    item differ from epoch to epoch and a resumed run redraws exactly what the uninterrupted one drew.
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    default_optimizer: ClassVar[tuple[str, float]] = ("sgd", 0.01)
    default_sgd: ClassVar[tuple[float, float]] = (0.9, 5e-4)  # (momentum, weight decay) when SGD trains
    paper: ClassVar[str] = ""
    test_options: ClassVar[dict[str, Any]] = {}
    # the defence's own options (DefenseConfig.method_options): a dataclass of option() fields with validate()
    Options: ClassVar[type] = NoOptions
    # whether the training loss ascends with the attack's objective, so its input gradient can drive free training
    free: ClassVar[bool] = False

    @classmethod
    def parse_options(cls, given: Mapping[str, Any]) -> Any:
        """This defence's :attr:`Options` from ``given``, typed and validated: an option it does not have, or a
        value of the wrong type, is a :class:`UserError` naming it and what is valid."""
        names = sorted(f.name for f in fields(cls.Options))
        if not names and given:
            raise UserError(
                f"defence {cls.name} takes no method options, got {', '.join(sorted(given))}; leave them out"
            )
        options = from_mapping(cls.Options, given, f"defence {cls.name} method_options")
        options.validate()
        return options

    def __init__(
        self,
        model: HashModel,
        loss_fn: Any,
        data: DatasetSplits,
        device: torch.device,
        generator: torch.Generator,
        *,
        config: DefenseConfig,
    ) -> None:
        super().__init__(model, loss_fn, data, device, generator)
        self.config = config
        self.options = self.parse_options(config.method_options)
        self.bank = TrainingCodeBank.from_model(model, data.train, device)
        loss_fn.preinstall(self.bank.values, self.bank.labels)
        self.replays = config.replays
        self.delta: torch.Tensor | None = None
        # carry: each training item's last adversarial perturbation, and whether it has one yet
        self.carried: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None

    def craft(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor,
        step: int,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The batch's adversarial examples from the method's ``self.attack``, seeded by the step; under
        ``carry`` started from each item's perturbation of its last visit (:meth:`carried_start`), which the
        result then replaces."""
        attack = self.attack.reseed(self.attack_seed(step))
        start = self.carried_start(x, idx) if self.config.carry else None
        x_adv = attack(x, y, targets, indices=idx.cpu(), start=start)
        if self.config.carry:
            assert self.carried is not None and self.seen is not None
            self.carried[idx] = (x_adv - x).detach()
            self.seen[idx] = True
        return x_adv

    def carried_start(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """ATTA's start (Zheng et al., CVPR 2020, Algorithm 1): ``clamp(x + delta_i)`` with ``delta_i`` the
        perturbation item i's attack ended at on its last visit, or the attack's own random start on the first."""
        if self.carried is None or self.seen is None:
            self.carried = torch.zeros(len(self.data.train), *x.shape[1:], device=self.device)
            self.seen = torch.zeros(len(self.data.train), dtype=torch.bool, device=self.device)
        fresh = self.attack.random_start(x, idx.cpu())
        seen = self.seen[idx].view(-1, *([1] * (x.ndim - 1)))
        return torch.where(seen, (x + self.carried[idx].to(x.dtype)).clamp(0, 1), fresh)

    def free_examples(self, x: torch.Tensor) -> torch.Tensor:
        """Free adversarial training (Shafahi et al., NeurIPS 2019, Algorithm 1): ``clamp(x + delta, 0, 1)``
        with ``delta`` carried over from the last replay (and batch; zeros at the start or when the batch size
        changes), a leaf whose gradient the step's own backward fills (:meth:`after_backward` moves it)."""
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x)
        self.delta = self.delta.detach().requires_grad_(True)
        return (x + self.delta).clamp(0, 1)

    def after_backward(self) -> None:
        """Free training's perturbation step: ``delta <- clip(delta + eps sign(grad_delta L), -eps, eps)``, the
        ascent of the training loss, whose only term that sees ``delta`` is the attack's objective."""
        if self.delta is None or self.delta.grad is None:
            return
        eps = self.config.eps
        self.delta = (self.delta.detach() + eps * self.delta.grad.sign()).clamp(-eps, eps)

    def make_optimizer(self) -> torch.optim.Optimizer:
        name, lr = self.default_optimizer
        name = self.config.optimizer or name
        lr = self.config.lr if self.config.lr is not None else lr
        momentum, decay = self.default_sgd
        if self.config.momentum is not None:
            momentum = self.config.momentum
        if self.config.weight_decay is not None:
            decay = self.config.weight_decay
        if name == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum, weight_decay=decay)
        return torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.5, 0.999))

    def lr_factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        return 0.1 ** ((step >= total_steps // 2) + (step >= total_steps * 3 // 4))

    def attack_seed(self, step: int) -> int:
        return derive_seed(self.config.seed, "training-attack", step)

    def state_dict(self) -> dict[str, Any]:
        free = {} if self.delta is None else {"delta": self.delta.detach()}
        carried = {} if self.carried is None else {"carried": self.carried, "seen": self.seen}
        return {**super().state_dict(), "bank": self.bank.state_dict(), **free, **carried}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.bank.load_state_dict(state["bank"])
        self.delta = state.get("delta")
        self.carried, self.seen = state.get("carried"), state.get("seen")
        if self.carried is not None and self.seen is not None:
            self.carried, self.seen = self.carried.to(self.device), self.seen.to(self.device)


DEFENSES: Registry[type[AdversarialTraining]] = Registry("defence")
register_defense = DEFENSES.register


@dataclass
class DefenseResult:
    model: HashModel
    history: list[dict[str, float]]
    path: Path | None
    seconds: float
    base_fingerprint: str = ""


def defend(
    base: Checkpoint,
    data: DatasetSplits,
    config: DefenseConfig,
    out: str | Path | None = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    quiet: bool = False,
    model: torch.nn.Module | None = None,
) -> DefenseResult:
    """Adversarially train the model of checkpoint ``base`` on ``data.train`` with ``config.method``.

    ``model`` passes the base model itself (one you brought, see :func:`robusthash.models.wrap_model`); the
    checkpoint then only supplies the training recipe it was trained with.
    """
    config.validate()
    cls = DEFENSES.get(config.method)
    device = torch.device(device)
    generator = seed_everything(config.seed)
    model = (base.build_model(device) if model is None else model.to(device)).train()
    record = base.record
    loss_fn = create_loss(
        record.loss, model.bits, data.num_classes, len(data.train), **record.loss_options
    ).to(device)
    fingerprint = model_fingerprint(model)
    meta = ModelRecord(
        "defended",
        record.model,
        record.train,
        record.dataset,
        defense={
            "method": cls.name,
            "config": asdict(config),
            "base_checkpoint": str(base.path),
            "base_seed": record.seed,
            "base_fingerprint": fingerprint,
        },
        seed=config.seed,
        environment=environment(device),
    ).to_meta()
    method = cls(model, loss_fn, data, device, generator, config=config)
    plan = TrainingPlan(
        config.epochs,
        config.batch_size,
        meta,
        Path(out) if out else None,
        device,
        resume,
        quiet,
        cls.name,
        config.precision,
    )
    history, seconds = run_training(model, method, data, plan)
    return DefenseResult(model, history, Path(out) if out else None, seconds, fingerprint)
