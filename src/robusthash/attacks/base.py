"""The attack contract: ``Attack`` (any threat model) and ``IterativeAttack`` (gradient steps in the eps-ball).

Every attack maps images in [0, 1] to adversarial images in the ball of radius ``eps`` around them (L-inf; L2 for an
attack whose ``norm`` says so):
``attack(images, labels, indices=...) -> adversarial images``. ``Attack.__call__`` enforces the invariants for
every subclass: inputs are checked and never modified, the output is projected into the eps-ball and [0, 1],
every module's train/eval mode and every parameter's ``requires_grad`` are restored, and all randomness of
query i comes from generators derived from ``(seed, indices[i], stream)`` (:func:`query_generator`), and the
model is called on fixed blocks of ``block_rows`` images (:class:`~robusthash.models.fixed_rows.FixedRows`), so a
query's adversarial example does not depend on the batch size, the order, or which other queries run with it.

An attack knows itself: ``name`` (registry key), ``display_name`` (tables), ``threat_model`` (``white-box``:
it crafts on the model it scores; ``transfer``: it crafts on surrogate models and a victim is scored),
:meth:`Attack.protocol_options` (its options under each evaluation protocol) and ``test_options`` (the fast
settings the test suite runs it with). Attacks that learn something first (THA's PrototypeNet, a generator)
do it in :meth:`Attack.fit`, timed apart from crafting, and can :meth:`Attack.save` / :meth:`Attack.load` it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robusthash.errors import UserError
from robusthash.models.fixed_rows import DEFAULT_ROWS, FixedRows
from robusthash.registry import Registry
from robusthash.runtime import autocast, check_precision, check_seed, eval_mode, safe_load

PROTOCOLS: tuple[str, ...] = ("default", "pgd20", "robust")
THREAT_MODELS: tuple[str, ...] = ("white-box", "transfer", "query")
BUDGET_CHECKPOINTS: tuple[int, ...] = (100, 1000, 10000)


@dataclass
class CodeBank:
    """Binary codes {-1, +1} (N, K) and multi-hot labels (N, C) of a reference set (train or database)."""

    codes: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.codes.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.codes.shape[0]} codes but {self.labels.shape[0]} label rows")

    def to(self, device: torch.device | str) -> CodeBank:
        return CodeBank(self.codes.to(device), self.labels.to(device))

    def __len__(self) -> int:
        return self.codes.shape[0]


def _tanh_with_derivative(name: str, derivative: Callable[[Tensor], Tensor], doc: str) -> type:
    """An autograd function: ``tanh`` forward, ``derivative(h)`` as its backward (the loss value is untouched)."""

    def forward(ctx: Any, h: Tensor) -> Tensor:
        ctx.save_for_backward(h)
        return torch.tanh(h)

    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (h,) = ctx.saved_tensors
        return grad * derivative(h)

    return type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": doc},
    )


_StableTanh = _tanh_with_derivative(
    "_StableTanh",
    lambda h: torch.cosh(h.clamp(-80, 80)).pow(-2),
    """
    tanh whose derivative is computed from the input as sech^2(h), not from the output as 1 - tanh^2.

    In float32, tanh(h) rounds to exactly +-1 for |h| > 9, so ``1 - tanh(h)^2`` is exactly 0 and a saturated
    bit gives no gradient at all: PGD's sign step then ignores it however many steps it takes. sech^2(h)
    stays positive up to |h| of about 50, so a saturated bit still points the way (its size does not matter
    to a sign step once the bits already flipped are masked out, as in PgA eq. 13).""",
)
_SurrogateTanh = _tanh_with_derivative(
    "_SurrogateTanh",
    lambda h: (1 + h.abs()).pow(-2),
    """
    tanh forward; backward through the softsign derivative ``1 / (1 + |h|)^2`` instead of sech^2(h).

    sech^2 decays like e^{-2|h|}: on a strongly saturated model the signed gradient is then dominated by the
    single least-saturated bit and PGD flips bits one at a time. The softsign derivative decays polynomially,
    so every bit that still agrees with the target keeps a say in the step (a surrogate gradient in the spirit
    of straight-through estimators; the loss value is untouched).""",
)


def stable_tanh(h: Tensor) -> Tensor:
    """tanh with its exact derivative sech^2(h), computed so that it does not underflow to zero at |h| > 9."""
    return _StableTanh.apply(h)


def surrogate_tanh(h: Tensor) -> Tensor:
    """tanh with the softsign surrogate derivative (see :class:`_SurrogateTanh`)."""
    return _SurrogateTanh.apply(h)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any sequence of parts (stable across processes, platforms and Python versions)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def query_generator(
    seed: int, index: int, stream: str, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The generator of one query's draws of one kind (``start``, ``target``, ``anchor``, ...) on ``device``.

    On the CPU the draws are the reference numbers. A CUDA generator (Philox) seeded alike gives every query
    the same draws on every CUDA run, so results stay per-query deterministic there, but its numbers are not
    the CPU's: a run on CUDA matches a CPU run within a tolerance, not bit for bit.
    """
    return torch.Generator(device=device).manual_seed(derive_seed(seed, int(index), stream))


def draw_disjoint_row(label: Tensor, candidates: Tensor, generator: torch.Generator) -> Tensor:
    """A candidate row sharing no class with ``label``, uniformly at random among those that qualify.

    A row that shares a class with every candidate gets a uniformly random candidate (documented; it cannot
    happen on single-label data with two or more classes).
    """
    candidates = candidates.cpu()
    disjoint = torch.nonzero((candidates.float() @ label.cpu().float()) == 0)[:, 0]
    pool = disjoint if len(disjoint) else torch.arange(len(candidates))
    return candidates[pool[int(torch.randint(len(pool), (1,), generator=generator))]]


def alpha_schedule(step: int, steps: int) -> float:
    """The tanh scale ``alpha`` of the public HAG / SDHA / DHTA code: ``tanh(alpha h)`` with alpha 0.1 for the
    first half of the iterations, then 0.2, 0.3, 0.5, 0.7 and 1.0 for a tenth each (for 2,000 iterations this
    is DHTA's switch at 1,000 / 1,200 / 1,400 / 1,600 / 1,800)."""
    table = (0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    return table[min(len(table) - 1, step * len(table) // max(steps, 1))]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with no parameter requiring grad; every module's own mode and every parameter's
    ``requires_grad`` restored on exit (whatever happens inside)."""
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grad_flags:
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            yield model
    finally:
        for p, flag in grad_flags:
            p.requires_grad_(flag)


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """``S_eps``: back into the L-inf ball of radius eps around x, then into the image range [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def project_l2(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Back into the L2 ball of radius eps around x (each image's perturbation scaled down to norm eps when it
    is longer), then into [0, 1] (clipping only shortens it)."""
    delta = x_adv - x
    norms = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.ndim - 1))
    return (x + delta * (eps / norms.clamp_min(eps)).clamp(max=1.0)).clamp_(0.0, 1.0)


NORMS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {"linf": project_linf, "l2": project_l2}


class Attack:
    """The minimal contract. Subclasses set the class attributes and implement :meth:`perturb`.

    ``model`` is the model the attack differentiates (the victim for white-box attacks, a surrogate for
    transfer attacks); ``reference`` its labelled code bank (the training set encoded by that model);
    ``database`` the retrieval database's codes and labels (targeted attacks draw target labels and anchor
    codes from it). An attack that needs one of them raises :class:`UserError` without it.
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    targeted: ClassVar[bool] = False
    threat_model: ClassVar[str] = "white-box"
    paper: ClassVar[str] = ""
    test_options: ClassVar[dict[str, Any]] = {}
    # takes ``topk``: scores its candidates with the evaluation's AP@topK
    scores_itself: ClassVar[bool] = False
    # the ball ``eps`` measures: linf (every attack of the papers) or l2 (Square's L2 variant)
    norm: str = "linf"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = 8 / 255,
        reference: CodeBank | None = None,
        database: CodeBank | None = None,
        seed: int = 0,
        batch_size: int = 256,
        precision: str = "fp32",
        quiet: bool = True,
        block_rows: int = DEFAULT_ROWS,
        label: str | None = None,
    ) -> None:
        if not (isinstance(eps, (int, float)) and eps >= 0 and not math.isnan(eps)):
            raise UserError(f"eps must be a number >= 0 (image units, e.g. 8/255), got {eps!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        check_precision(precision)
        if not isinstance(block_rows, int) or block_rows < 1:
            raise UserError(f"block_rows must be a positive integer, got {block_rows!r}")
        # every model call on blocks of block_rows images: a query's floats do not depend on its company
        self.model = model if isinstance(model, FixedRows) else FixedRows(model, block_rows)
        self.block_rows = block_rows
        self.precision = precision
        self.eps = float(eps)
        self.reference = reference
        self.database = database
        self.seed = int(seed)
        self.batch_size = batch_size
        self.quiet = quiet
        self.label = label  # what the progress bar names besides the attack (e.g. the model); not a setting
        self._bar: Any = None
        self._given_start: Tensor | None = None  # the batch's given start, while __call__ runs
        # the whole training time of the fitted state, where the attack keeps it with the state (ProS-GAN's
        # checkpoint adds it up across resumes and reuses): reported in place of the time one fit() call took
        self.recorded_fit_seconds: float | None = None

    def reseed(self, seed: int) -> Attack:
        """Draw from ``seed`` from now on (a training loop gives each step's attack its own seed); returns self."""
        check_seed(seed)
        self.seed = int(seed)
        return self

    # ----------------------------------------------------------------- what an attack says of itself
    @classmethod
    def protocol_options(cls, protocol: str) -> dict[str, Any]:
        """Constructor options under an evaluation protocol (``default``: the attack's published settings;
        ``robust``, the worst-case protocol, runs every attack with its published settings too)."""
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        return {}

    def describe(self) -> dict[str, Any]:
        """The settings that produced a result (for results files and figure captions)."""
        return {
            "attack": self.name,
            "targeted": self.targeted,
            "threat_model": self.threat_model,
            "eps": self.eps,
            "seed": self.seed,
            "precision": self.precision,
            "block_rows": self.block_rows,
        }

    # ----------------------------------------------------------------- preparation (learned attacks)
    def fit(self, reference: CodeBank | None = None, quiet: bool = True, train: Any = None) -> Attack:
        """Learn what the attack needs before crafting (a no-op for most attacks); returns ``self``.

        ``reference`` defaults to the attack's reference bank; ``train`` is the training split (images and
        labels), for attacks that learn from images (ProS-GAN's generator)."""
        return self

    @property
    def is_fitted(self) -> bool:
        return True

    def fitted_state(self) -> dict[str, Any]:
        """What :meth:`fit` learned, as tensors and plain values (saved by :meth:`save`)."""
        return {}

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`fitted_state` returned."""

    def save(self, path: str | Path) -> None:
        from robusthash.runtime import atomic_torch_save

        atomic_torch_save(
            {"attack": self.name, "settings": self.describe(), "state": self.fitted_state()}, path
        )

    def load(self, path: str | Path) -> Attack:
        """Restore a fitted attack saved by :meth:`save` (read with ``weights_only=True``)."""
        payload = safe_load(path, "fitted attack")
        if not isinstance(payload, dict) or payload.get("attack") != self.name:
            raise UserError(f"{path} does not hold a fitted {self.name} attack")
        self.load_fitted_state(payload["state"])
        return self

    # ----------------------------------------------------------------- crafting
    def __call__(
        self,
        images: Tensor,
        labels: Tensor,
        targets: Tensor | None = None,
        indices: Tensor | None = None,
        start: Tensor | None = None,
    ) -> Tensor:
        """Adversarial versions of ``images`` (N, C, H, W) in [0, 1]; ``labels`` (N, C) multi-hot.

        ``indices`` (N,) name the queries (their positions in the query set): query i's random draws come from
        ``(seed, indices[i])``. By default they are 0..N-1. Targeted attacks draw ``targets`` (target label rows)
        with :meth:`choose_targets` unless given. ``start`` (N, C, H, W), for an attack that starts at random,
        replaces its random start (projected into the ball): a training loop's perturbation carried over from
        the last epoch (ATTA's accumulated perturbation, :class:`~robusthash.defenses.DefenseConfig` ``carry``).
        """
        if images.ndim != 4 or labels.ndim != 2 or images.shape[0] != labels.shape[0]:
            raise UserError(
                f"expected images (N, C, H, W) and multi-hot labels (N, classes) with the same N, got "
                f"images {tuple(images.shape)} and labels {tuple(labels.shape)}"
            )
        bank = self.reference if self.reference is not None else self.database
        if bank is not None and labels.shape[1] != bank.labels.shape[1]:
            raise UserError(
                f"labels have {labels.shape[1]} classes, the model's code banks {bank.labels.shape[1]}: "
                "pass multi-hot label rows of the dataset the banks were encoded from"
            )
        if not images.is_floating_point():
            raise UserError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        channels = getattr(self.model, "in_channels", images.shape[1])
        if images.shape[1] != channels:
            raise UserError(f"the model takes {channels}-channel images, got {images.shape[1]} channels")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise UserError("images must lie in [0, 1] (the normalisation belongs inside the model)")
        indices = torch.arange(images.shape[0]) if indices is None else torch.as_tensor(indices).cpu()
        if indices.shape != (images.shape[0],):
            raise ValueError(f"indices must have shape ({images.shape[0]},), got {tuple(indices.shape)}")
        if start is not None and start.shape != images.shape:
            raise ValueError(
                f"start must have the images' shape {tuple(images.shape)}, got {tuple(start.shape)}"
            )
        if images.shape[0] == 0:
            return images.clone()
        if self.targeted and targets is None:
            targets = self.choose_targets(labels, indices)
        device = next(self.model.parameters()).device
        # On CUDA: pinned host memory both ways and non-blocking copies, one synchronisation at the end.
        pinned = device.type == "cuda" and images.device.type == "cpu"
        out = torch.empty_like(images, pin_memory=pinned)
        starts = range(0, images.shape[0], self.batch_size)
        desc = self.name if self.label is None else f"{self.label}: {self.name}"
        self._bar = tqdm(
            total=len(starts) * self.progress_units(), desc=desc, disable=self.quiet, leave=False
        )
        try:
            with frozen(self.model):
                for first in starts:
                    sl = slice(first, first + self.batch_size)
                    batch = images[sl].detach()
                    x = (batch.pin_memory() if pinned else batch).to(device, non_blocking=pinned).clone()
                    y = labels[sl].detach().to(device, non_blocking=pinned)
                    t = targets[sl].to(device, non_blocking=pinned) if targets is not None else None
                    self._given_start = None if start is None else start[sl].to(device)
                    with autocast(device, self.precision):
                        adv = self.perturb(x, y, t, indices[sl])
                    out[sl].copy_(self.project(adv.detach().to(x.dtype), x), non_blocking=pinned)
                if pinned:
                    torch.cuda.synchronize(device)
        finally:
            self._bar.close()
            self._bar = None
            self._given_start = None
        return out

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """The attack's projection of its output, applied by :meth:`__call__`: into the ``norm`` ball of radius
        ``eps`` around ``x``, within [0, 1] (an unbounded attack states its own rule here)."""
        return NORMS[self.norm](x_adv, x, self.eps)

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        """Adversarial images for one batch (projected by the caller); abstract."""
        raise NotImplementedError  # abstract: each attack implements its crafting

    def progress_units(self) -> int:
        """Progress-bar units per batch (one by default; iterative attacks count steps)."""
        return 1

    def step_done(self) -> None:
        """Advance the progress bar by one unit."""
        if self._bar is not None:
            self._bar.update(1)

    # ----------------------------------------------------------------- per-query randomness and banks
    def generator(self, index: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
        """Query ``index``'s generator for draws of kind ``stream`` (see :func:`query_generator`)."""
        return query_generator(self.seed, index, stream, device)

    def random_start(self, x: Tensor, indices: Tensor, stream: str = "start") -> Tensor:
        """``x + U(-eps, eps)`` (PgA eq. 15; under ``norm="l2"`` a uniform point of the L2 ball), clipped to
        [0, 1]; query i's noise from its own generator
        (``stream`` names the draw: a restart draws from another stream).

        The noise is drawn where ``x`` lives (no host-to-device copy of a batch of noise on CUDA). A ``start``
        given to :meth:`__call__` replaces the first draw (``stream`` ``start``).
        """
        if self._given_start is not None and stream == "start":
            return self.project(self._given_start.to(x.dtype), x)
        if self.norm == "l2":
            return (x + self._l2_ball_draw(x, indices, stream).to(x.dtype)).clamp_(0.0, 1.0)
        noise = torch.stack(
            [
                torch.rand(x.shape[1:], generator=self.generator(int(i), stream, x.device), device=x.device)
                for i in indices
            ]
        )
        return (x + (noise * 2 - 1).mul_(self.eps).to(x.dtype)).clamp_(0.0, 1.0)

    def _l2_ball_draw(self, x: Tensor, indices: Tensor, stream: str) -> Tensor:
        """One uniform draw from the L2 ball of radius eps per query (a Gaussian direction, radius eps u^(1/d)),
        from the query's own generator."""
        d = x[0].numel()
        out = []
        for i in indices:
            g = self.generator(int(i), stream, x.device)
            direction = torch.randn(x.shape[1:], generator=g, device=x.device)
            radius = self.eps * float(torch.rand((), generator=g, device=x.device)) ** (1.0 / d)
            out.append(direction * (radius / direction.norm().clamp_min(1e-12)))
        return torch.stack(out)

    def target_candidates(self) -> Tensor:
        """Label rows a targeted attack may aim at: the distinct non-empty label rows of the database."""
        rows = torch.unique(self.require_database().labels.cpu(), dim=0)
        return rows[rows.sum(1) > 0]

    def choose_targets(self, labels: Tensor, indices: Tensor | None = None) -> Tensor:
        """One target label row per query: a candidate sharing no class with it, drawn with the query's own
        generator (:func:`draw_disjoint_row`)."""
        indices = torch.arange(labels.shape[0]) if indices is None else indices
        candidates = self.target_candidates()
        if len(candidates) == 0:
            raise UserError(
                f"attack {self.name} has no target label: no database label row qualifies (a targeted attack "
                "aims at a non-empty label row of the database; P2P / DHTA at one occurring more than n_t times)"
            )
        return torch.stack(
            [
                draw_disjoint_row(y, candidates, self.generator(int(i), "target"))
                for y, i in zip(labels.cpu(), indices, strict=True)
            ]
        )

    def require_reference(self) -> CodeBank:
        if self.reference is None:
            raise UserError(f"attack {self.name} needs a reference code bank (the encoded training set)")
        return self.reference

    def require_database(self) -> CodeBank:
        if self.database is None:
            raise UserError(f"attack {self.name} needs the database codes and labels")
        return self.database


class IterativeAttack(Attack):
    """An attack that optimises the input by gradient steps: ``steps`` iterations of ``step_size``.

    Provides :meth:`pgd` (signed steps projected to the eps-ball, PgA eq. 15 / CgAT eq. 8), :meth:`code_output`
    (tanh of the model's logits with a saturation-safe derivative) and a progress bar over steps.

    ``eot`` > 1 averages each step's loss over that many evaluations of the model (expectation over
    transformation, Athalye et al., ICML 2018): for a model whose outputs are random (input noise, random
    resizing), one sample's gradient misleads the step; the mean of ``eot`` samples estimates the expected one.

    ``norm="l2"`` runs every step in the L2 ball of radius ``eps`` instead (Madry et al., ICLR 2018): the step is
    the gradient scaled to L2 norm ``step_size`` (default ``eps / 8``), the start a uniform draw from the ball.
    """

    default_steps: ClassVar[int] = 100
    l2: ClassVar[bool] = True  # runs in an L2 ball (norm="l2"); False for an attack with steps of its own

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int | None = None,
        step_size: float | None = None,
        eot: int = 1,
        norm: str = "linf",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if norm not in NORMS:
            raise UserError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        if norm == "l2" and not self.l2:
            raise UserError(f"attack {self.name} runs in the L-inf ball only; valid norm: linf")
        self.norm = norm
        if (
            step_size is None
        ):  # L-inf: the papers' 1/255; L2: an eighth of the radius (1/255 is 8/255's eighth)
            step_size = 1 / 255 if norm == "linf" else self.eps / 8
        if not isinstance(eot, int) or eot < 1:
            raise UserError(f"eot must be a positive integer (gradient samples per step), got {eot!r}")
        self.eot = eot
        steps = self.default_steps if steps is None else steps
        if not isinstance(steps, int) or steps < 0:
            raise UserError(f"steps must be an integer >= 0, got {steps!r}")
        if not (isinstance(step_size, (int, float)) and step_size > 0 and math.isfinite(step_size)):
            raise UserError(f"step_size must be a finite number > 0, got {step_size!r}")
        self.steps = steps
        self.step_size = float(step_size)

    @classmethod
    def protocol_options(cls, protocol: str) -> dict[str, Any]:
        """``pgd20``: 20 signed steps of 1/255 (PgA Table 5); ``default`` and ``robust``: the published iterations."""
        super().protocol_options(protocol)
        return {"steps": 20, "step_size": 1 / 255} if protocol == "pgd20" else {}

    def progress_units(self) -> int:
        return max(self.steps, 1)

    def code_output(self, x: Tensor, alpha: float = 1.0, surrogate: bool = False) -> Tensor:
        """``tanh(alpha * h(x))``, differentiated exactly (:func:`stable_tanh`) or by :func:`surrogate_tanh`."""
        h = alpha * self.model.preactivation(x)
        return surrogate_tanh(h) if surrogate else stable_tanh(h)

    def expected(self, loss_fn: Callable[[Tensor, int], Tensor], x_adv: Tensor, step: int) -> Tensor:
        """``loss_fn(x_adv, step)``, averaged over ``eot`` evaluations when ``eot`` > 1."""
        if self.eot == 1:
            return loss_fn(x_adv, step)
        return sum(loss_fn(x_adv, step) for _ in range(self.eot)) / self.eot

    def pgd(
        self,
        x: Tensor,
        loss_fn: Callable[[Tensor, int], Tensor],
        start: Tensor | None = None,
        step_size: float | Callable[[int], float] | None = None,
        steps: int | None = None,
    ) -> Tensor:
        """Maximise ``loss_fn(x_adv, step)`` (summed over the batch) by signed-gradient ascent in the eps-ball,
        ``steps`` steps (the attack's own by default) of ``step_size`` (the attack's own, or a function of the step).

        ``x'_{t+1} = S_eps(x'_t + eta * sign(grad L))`` (PgA eq. 15, CgAT eq. 8).
        """
        eta = self.step_size if step_size is None else step_size
        eta_at = eta if callable(eta) else (lambda step: eta)
        steps = self.steps if steps is None else steps
        x_adv = (x.clone() if start is None else start.clone()).detach()
        # the ball's bounds once, clipped to [0, 1]: the step below is S_eps (project_linf) done in place
        lower, upper = (x - self.eps).clamp_(0.0, 1.0), (x + self.eps).clamp_(0.0, 1.0)
        for step in range(steps):
            x_adv.requires_grad_(True)
            loss = self.expected(loss_fn, x_adv, step)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach()
            with torch.no_grad():
                if self.norm == "l2":  # the gradient scaled to L2 norm eta, then back into the L2 ball
                    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
                    x_adv = project_l2(x_adv + grad * (eta_at(step) / norms), x, self.eps)
                    self.step_done()
                    continue
                x_adv.add_(grad.sign_(), alpha=eta_at(step))
                torch.maximum(x_adv, lower, out=x_adv)
                torch.minimum(x_adv, upper, out=x_adv)
            self.step_done()
        return x_adv

    def optimise(
        self,
        x: Tensor,
        loss_fn: Callable[[Tensor, int], Tensor],
        optimizer: str,
        lr: float,
        **optimizer_options: Any,
    ) -> Tensor:
        """Minimise ``loss_fn`` with a torch optimiser (``sgd`` / ``adam``) on the image, projecting after each
        step (the public HAG and SDHA code); ``optimizer="pgd"`` maximises ``-loss_fn`` by :meth:`pgd`."""
        if optimizer == "pgd":
            return self.pgd(x, lambda xa, s: -loss_fn(xa, s))
        x_adv = x.clone().requires_grad_(True)
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
        opt = cls([x_adv], lr=lr, **optimizer_options)
        for step in range(self.steps):
            value = self.expected(loss_fn, x_adv, step)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            with torch.no_grad():
                x_adv.copy_(NORMS[self.norm](x_adv, x, self.eps))
            self.step_done()
        return x_adv.detach()

    def describe(self) -> dict[str, Any]:
        ball = {"norm": self.norm} if self.norm != "linf" else {}
        return {
            **super().describe(),
            "steps": self.steps,
            "step_size": self.step_size,
            "eot": self.eot,
            **ball,
        }


class QueryAttack(Attack):
    """An attack under the query threat model: it sees the victim only through a :class:`~robusthash.oracle.QueryOracle`
    (code or rank access), with ``budget`` images per query; no gradient, no weight.

    It records, per query index, the images it sent (``queries_used``) and the victim's code of its best image
    once it had spent each budget of :data:`BUDGET_CHECKPOINTS` (``budget_codes``), so that one run gives the
    mAP it reached at 100 / 1,000 / 10,000 queries. Those codes are the evaluator's bookkeeping, taken from the
    victim directly and not charged to the attacker.
    """

    threat_model: ClassVar[str] = "query"
    default_budget: ClassVar[int] = 1000

    def __init__(
        self, model: nn.Module, *, budget: int | None = None, oracle_topk: int = 100, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        budget = self.default_budget if budget is None else budget
        if not isinstance(budget, int) or budget < 1:
            raise UserError(f"budget must be a positive integer (images per query), got {budget!r}")
        if not isinstance(oracle_topk, int) or oracle_topk < 1:
            raise UserError(f"oracle_topk must be a positive integer, got {oracle_topk!r}")
        self.budget = budget
        self.oracle_topk = oracle_topk
        self.queries_used: dict[int, int] = {}
        self.budget_codes: dict[int, dict[int, Tensor]] = {}

    @classmethod
    def protocol_options(cls, protocol: str) -> dict[str, Any]:
        super().protocol_options(protocol)
        return {}

    def progress_units(self) -> int:
        return self.budget

    def oracle(self, count: int, access: str, continuous: bool = False) -> Any:
        """A fresh oracle over the victim for ``count`` queries of this attack's budget."""
        from robusthash.oracle import QueryOracle

        database = self.require_database().codes if access == "rank" else None
        return QueryOracle(self.model, count, self.budget, access, database, self.oracle_topk, continuous)

    def checkpoint_budgets(self) -> tuple[int, ...]:
        """The budgets of :data:`BUDGET_CHECKPOINTS` this attack can reach, and its own budget."""
        return tuple(sorted({b for b in BUDGET_CHECKPOINTS if b < self.budget} | {self.budget}))

    def record(self, spent: Tensor, best: Tensor, indices: Tensor, final: bool = False) -> None:
        """Keep the victim's code of ``best`` for each query that has spent a checkpoint budget (every remaining
        checkpoint when ``final``: the query stopped early or used its whole budget), and, when ``final``, the
        images each query sent."""
        for budget in self.checkpoint_budgets():
            seen = self.budget_codes.setdefault(budget, {})
            due = [
                row
                for row, i in enumerate(indices.tolist())
                if i not in seen and (final or spent[row] >= budget)
            ]
            if due:
                with torch.no_grad():
                    codes = self.model.encode(best[due]).cpu()
                for j, row in enumerate(due):
                    seen[int(indices[row])] = codes[j]
        if final:
            for row, i in enumerate(indices.tolist()):
                self.queries_used[int(i)] = int(spent[row])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "budget": self.budget, "oracle_topk": self.oracle_topk}


ATTACKS: Registry[type[Attack]] = Registry("attack")
register_attack = ATTACKS.register
