"""The attack framework: one ``Attack`` base class, code banks, and the saturation-safe tanh.

Every attack maps images in [0, 1] to adversarial images in the L-inf ball of radius ``eps`` around them:
``attack(images, labels) -> adversarial images``. Attacks never modify their inputs, always restore the
model's train/eval mode and its parameters' ``requires_grad``, draw all randomness from their own seeded
generator, run in batches on the model's device and show progress unless ``quiet``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from robusthash.errors import UserError
from robusthash.models import HashModel


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


class _StableTanh(torch.autograd.Function):
    """tanh whose derivative is computed from the input as sech^2(h), not from the output as 1 - tanh^2.

    In float32, tanh(h) rounds to exactly +-1 for |h| > 9, so ``1 - tanh(h)^2`` is exactly 0 and a saturated
    bit gives no gradient at all: PGD's sign step then ignores it however many steps it takes. sech^2(h)
    stays positive up to |h| of about 50, so a saturated bit still points the way (its size does not matter
    to a sign step once the bits already flipped are masked out, as in PgA eq. 13).
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor) -> Tensor:
        ctx.save_for_backward(h)
        return torch.tanh(h)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (h,) = ctx.saved_tensors
        return grad / torch.cosh(h.clamp(-80, 80)).pow(2)


class _SurrogateTanh(torch.autograd.Function):
    """tanh forward; backward through the softsign derivative ``1 / (1 + |h|)^2`` instead of sech^2(h).

    sech^2 decays like e^{-2|h|}: on a strongly saturated model the signed gradient is then dominated by the
    single least-saturated bit and PGD flips bits one at a time. The softsign derivative decays polynomially,
    so every bit that still agrees with the target keeps a say in the step (a surrogate gradient in the spirit
    of straight-through estimators; the loss value is untouched).
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor) -> Tensor:
        ctx.save_for_backward(h)
        return torch.tanh(h)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (h,) = ctx.saved_tensors
        return grad / (1 + h.abs()).pow(2)


def stable_tanh(h: Tensor) -> Tensor:
    """tanh with its exact derivative sech^2(h), computed so that it does not underflow to zero at |h| > 9."""
    return _StableTanh.apply(h)


def surrogate_tanh(h: Tensor) -> Tensor:
    """tanh with the softsign surrogate derivative (see :class:`_SurrogateTanh`)."""
    return _SurrogateTanh.apply(h)


def draw_disjoint_rows(labels: Tensor, candidates: Tensor, generator: torch.Generator) -> Tensor:
    """For each label row, a candidate row sharing no class with it, uniformly at random (seeded).

    A row that shares a class with every candidate gets a uniformly random candidate (documented; it cannot
    happen on single-label data with two or more classes).
    """
    overlap = (labels.cpu().float() @ candidates.cpu().float().T) > 0
    scores = torch.rand(overlap.shape, generator=generator)
    scores[overlap] -= 2.0  # any disjoint candidate beats every overlapping one
    return candidates.cpu()[scores.argmax(1)]


def alpha_schedule(step: int, steps: int) -> float:
    """The tanh scale ``alpha`` of the public HAG / SDHA / DHTA code: ``tanh(alpha h)`` with alpha 0.1 for the
    first half of the iterations, then 0.2, 0.3, 0.5, 0.7 and 1.0 for a tenth each (for 2,000 iterations this
    is DHTA's switch at 1,000 / 1,200 / 1,400 / 1,600 / 1,800)."""
    table = (0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    return table[min(len(table) - 1, step * len(table) // max(steps, 1))]


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """``S_eps``: back into the L-inf ball of radius eps around x, then into the image range [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


class Attack:
    """Base class. Subclasses set ``name``, ``targeted``, ``default_steps`` and implement :meth:`perturb`.

    ``reference`` is the attacker's labelled code bank (the training set encoded by the attacked model, by
    default), ``database`` the retrieval database's codes and labels (targeted attacks draw target labels
    and anchor codes from it). An attack that needs one of them raises :class:`UserError` without it.
    """

    name: ClassVar[str] = ""
    targeted: ClassVar[bool] = False
    default_steps: ClassVar[int] = 100
    paper: ClassVar[str] = ""

    def __init__(
        self,
        model: HashModel,
        *,
        eps: float = 8 / 255,
        steps: int | None = None,
        step_size: float = 1 / 255,
        reference: CodeBank | None = None,
        database: CodeBank | None = None,
        seed: int = 0,
        batch_size: int = 256,
        quiet: bool = True,
    ) -> None:
        if eps < 0:
            raise UserError(f"eps must be >= 0, got {eps}")
        steps = self.default_steps if steps is None else steps
        if steps < 0:
            raise UserError(f"steps must be >= 0, got {steps}")
        self.model = model
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.reference = reference
        self.database = database
        self.seed = seed
        self.batch_size = batch_size
        self.quiet = quiet
        self.generator = torch.Generator().manual_seed(seed)

    # ----------------------------------------------------------------- public API
    def __call__(self, images: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        """Adversarial versions of ``images`` (N, C, H, W) in [0, 1]; ``labels`` (N, C) multi-hot.

        For targeted attacks ``targets`` are the target label rows; by default they are drawn with
        :meth:`choose_targets`.
        """
        if images.ndim != 4 or labels.ndim != 2 or images.shape[0] != labels.shape[0]:
            raise ValueError("expected images (N, C, H, W) and labels (N, C) with the same N")
        if self.targeted and targets is None:
            targets = self.choose_targets(labels)
        device = next(self.model.parameters()).device
        out = torch.empty_like(images)
        was_training = self.model.training
        grad_flags = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        starts = range(0, images.shape[0], self.batch_size)
        self._bar = tqdm(
            total=len(starts) * max(self.steps, 1), desc=self.name, disable=self.quiet, leave=False
        )
        try:
            for start in starts:
                sl = slice(start, start + self.batch_size)
                x = images[sl].detach().to(device).clone()
                y = labels[sl].detach().to(device)
                t = targets[sl].to(device) if targets is not None else None
                adv = self.perturb(x, y, t)
                out[sl] = project_linf(adv.detach(), x, self.eps).to(out.device)
        finally:
            self._bar.close()
            for p, flag in zip(self.model.parameters(), grad_flags, strict=True):
                p.requires_grad_(flag)
            self.model.train(was_training)
        return out

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError  # abstract: each attack implements its optimisation

    def choose_targets(self, labels: Tensor) -> Tensor:
        """Target labels for a targeted attack: a database label row sharing no class with the query
        (:func:`draw_disjoint_rows` over the distinct non-empty label rows of the database)."""
        rows = torch.unique(self.require_database().labels.cpu(), dim=0)
        return draw_disjoint_rows(labels, rows[rows.sum(1) > 0], self.generator)

    # ----------------------------------------------------------------- helpers
    _bar: Any = None

    def step_done(self) -> None:
        """Advance the progress bar by one optimisation step (attacks call it once per step)."""
        if self._bar is not None:
            self._bar.update(1)

    def require_reference(self) -> CodeBank:
        if self.reference is None:
            raise UserError(f"attack {self.name} needs a reference code bank (the encoded training set)")
        return self.reference

    def require_database(self) -> CodeBank:
        if self.database is None:
            raise UserError(f"attack {self.name} needs the database codes and labels")
        return self.database

    def random_start(self, x: Tensor) -> Tensor:
        """``x + U(-eps, eps)`` (PgA eq. 15), clipped to [0, 1]; noise from the attack's CPU generator."""
        noise = (torch.rand(x.shape, generator=self.generator) * 2 - 1) * self.eps
        return (x + noise.to(x.device)).clamp_(0.0, 1.0)

    def code_output(self, x: Tensor, alpha: float = 1.0, surrogate: bool = False) -> Tensor:
        """``tanh(alpha * h(x))``, differentiated exactly (:func:`stable_tanh`) or by :func:`surrogate_tanh`."""
        h = alpha * self.model.preactivation(x)
        return surrogate_tanh(h) if surrogate else stable_tanh(h)

    def pgd(
        self,
        x: Tensor,
        loss_fn: Callable[[Tensor, int], Tensor],
        start: Tensor | None = None,
        step_size: float | None = None,
    ) -> Tensor:
        """Maximise ``loss_fn(x_adv, step)`` (summed over the batch) by signed-gradient ascent in the eps-ball.

        ``x'_{t+1} = S_eps(x'_t + eta * sign(grad L))`` (PgA eq. 15, CgAT eq. 8).
        """
        eta = self.step_size if step_size is None else step_size
        x_adv = (x.clone() if start is None else start).detach()
        for step in range(self.steps):
            x_adv.requires_grad_(True)
            loss = loss_fn(x_adv, step)
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                x_adv = project_linf(x_adv + eta * grad.sign(), x, self.eps)
            self.step_done()
        return x_adv.detach()

    def describe(self) -> dict[str, Any]:
        """The settings that produced a result (for results files and figure captions)."""
        return {"attack": self.name, "targeted": self.targeted, "eps": self.eps, "steps": self.steps,
                "step_size": self.step_size, "seed": self.seed}  # fmt: skip
