"""Square attack (Andriushchenko et al., ECCV 2020), L-inf and L2, on the pharos objective through a code oracle."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import QueryAttack, register_attack
from robusthash.codes import pharos_code
from robusthash.errors import UserError
from robusthash.oracle import QueryOracle

# (iteration as a fraction of 10,000, divisor of p_init) of the public code's p_selection
_P_SCHEDULE: tuple[tuple[int, int], ...] = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
    (10000, 512),
)


Proposal = Callable[
    [int, Tensor, Tensor], Tensor
]  # (iteration, active rows, their best images) -> candidates


def square_fraction(p_init: float, iteration: int, iterations: int) -> float:
    """The share ``p`` of the image a square covers at ``iteration`` of ``iterations`` (the authors'
    ``p_selection``, rescaled to 10,000 iterations): p_init, halved at 10, 50, 200, 500, 1,000, 2,000, 4,000,
    6,000 and 8,000."""
    it = int(iteration / max(iterations, 1) * 10000)
    for bound, divisor in _P_SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def square_side(p: float, height: int, width: int) -> int:
    """Side of the square that covers the share ``p`` of an image: ``round(sqrt(p H W))``, in [1, min(H, W)]."""
    return max(1, min(height, width, round(math.sqrt(p * height * width))))


def bump(rows: int, cols: int) -> Tensor:
    """The authors' ``pseudo_gaussian_pert_rectangles``: concentric rectangles around the centre, the k-th (from
    0) adding 1 / (k + 1)^2, normalised to unit L2 norm."""
    delta = torch.zeros(rows, cols, dtype=torch.float64)
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[
            max(top - k, 0) : min(top - k + 2 * k + 1, rows),
            max(left - k, 0) : min(left - k + 2 * k + 1, cols),
        ] += 1.0 / (k + 1) ** 2
    return delta / delta.norm()


def square_pattern(side: int) -> Tensor:
    """The authors' ``meta_pseudo_gaussian_pert`` (two sub-rectangles, before any transpose): the upper half of the
    square a positive bump, the lower half a negative one, normalised to unit L2 norm."""
    delta = torch.zeros(side, side, dtype=torch.float64)
    delta[: side // 2] = bump(side // 2, side)
    delta[side // 2 :] = -bump(side - side // 2, side)
    return delta / delta.norm()


def pharos_agreement(codes: Tensor, anchor: Tensor) -> Tensor:
    """``(1/K) a^T c`` per query: how far codes ``c`` still agree with the anchor ``a`` (PgA eq. 10's loss
    negated; -1 when every bit is flipped). The random search minimises it."""
    return (codes * anchor).mean(1)


@register_attack
class Square(QueryAttack):
    """Random search in the L-inf ball, one image per iteration and query (Andriushchenko et al., Alg. 1).

    Start: vertical stripes ``x + eps * s`` with one random sign per channel and column. Each iteration redraws
    one square window of side :func:`square_side` (its position uniform, one sign per channel, ``+-eps``) and keeps
    the candidate when its loss is lower. The loss is :func:`pharos_agreement` of the oracle's code with the
    query's pharos code (PgA eqs. 7-8, computed from the service's database codes and labels): code access, with
    the continuous code tanh(h) when ``continuous`` (the strongest signal a code service can give), else the
    binary code, where a candidate of equal loss is kept too (a walk on the plateaus that binary codes make).
    A query stops once every bit disagrees with its anchor. Per-query draws; ``p_init`` 0.05 as the paper's
    L-inf default. A window's position is uniform over every place it fits (the public code leaves out the last
    row and column, an off-by-one we do not copy), and a window that changes nothing is not redrawn.

    ``norm="l2"``: the L2 variant (the authors' Alg. 3, :meth:`_l2`) in the L2 ball of radius ``l2_eps``
    (image units, [0, 1] pixels; the contract then projects into that ball): bumps of
    :func:`square_pattern` instead of constant squares, the window's old mass and a second window's moved in.
    """

    name: ClassVar[str] = "square"
    display_name: ClassVar[str] = "Square"
    test_options: ClassVar[dict[str, Any]] = {"budget": 150}
    default_budget: ClassVar[int] = 1000
    paper: ClassVar[str] = "Andriushchenko et al., Square Attack, ECCV 2020 (code oracle, pharos objective)"

    def __init__(
        self,
        model: Any,
        *,
        p_init: float = 0.05,
        continuous: bool = True,
        norm: str = "linf",
        l2_eps: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if not 0 < p_init <= 1:
            raise UserError(f"p_init must lie in (0, 1], got {p_init}")
        if norm not in ("linf", "l2"):
            raise UserError(f"unknown norm {norm!r}; valid: linf, l2")
        if norm == "l2":
            if not (isinstance(l2_eps, (int, float)) and 0 < l2_eps and math.isfinite(l2_eps)):
                raise UserError(
                    f"l2_eps must be a finite number > 0 (L2 norm in [0, 1] image units), got {l2_eps!r}"
                )
            self.eps = float(l2_eps)  # the ball the contract projects into is then the L2 ball
        self.norm = norm
        self.p_init = float(p_init)
        self.continuous = bool(continuous)

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        db = self.require_database()
        anchor = pharos_code(labels, db.codes.to(x.device), db.labels.to(x.device)).to(x.dtype)
        return self.search(x, anchor, indices, self.oracle(len(x), "code", self.continuous), track=True)

    def search(
        self,
        x: Tensor,
        anchor: Tensor,
        indices: Tensor,
        oracle: QueryOracle,
        track: bool = False,
        progress: Callable[[], None] | None = None,
    ) -> Tensor:
        """The best image found for each query within the oracle's budget (``track``: record the queries used
        and the checkpoint codes, as this attack's own run does; the robust cascade's stage does not;
        ``progress``: called once per iteration, the caller's progress bar; this attack's own by default).

        One random search for both norms: :meth:`_linf` or :meth:`_l2` give the start and, at each iteration,
        the candidates of the queries still active; a candidate is kept when its loss is lower.
        """
        tick = progress or self.step_done
        start, propose = (self._l2 if self.norm == "l2" else self._linf)(x, indices, oracle.budget)
        best = start
        loss = pharos_agreement(oracle(best, torch.arange(len(x))), anchor)
        tick()
        for it in range(1, oracle.budget):
            active = torch.nonzero(loss > -1)[:, 0].cpu()
            if track:
                self.record(oracle.spent, best, indices)
            if len(active) == 0:
                break
            on = active.to(x.device)
            candidate = propose(it, on, best[on])
            new_loss = pharos_agreement(oracle(candidate, active), anchor[on])
            better = new_loss < loss[on] if self.continuous else new_loss <= loss[on]
            best[on[better]] = candidate[better]
            loss[on[better]] = new_loss[better]
            tick()
        if track:
            self.record(oracle.spent, best, indices, final=True)
        return best

    def _grids(self, x: Tensor) -> tuple[Tensor, Tensor]:
        height, width = x.shape[2:]
        return (
            torch.arange(height, device=x.device).view(1, 1, height, 1),
            torch.arange(width, device=x.device).view(1, 1, 1, width),
        )

    def _linf(self, x: Tensor, indices: Tensor, budget: int) -> tuple[Tensor, Proposal]:
        """L-inf (Alg. 1): vertical stripes of +-eps; a candidate redraws one square window at +-eps."""
        n, channels, height, width = x.shape
        draws = [self.generator(int(i), "square") for i in indices]
        stripes = torch.stack([torch.rand(channels, 1, width, generator=g) for g in draws]).to(x.device)
        # one row of uniforms per iteration and query: window row, window column, one sign per channel
        uniforms = torch.stack([torch.rand(budget, 2 + channels, generator=g) for g in draws]).to(x.device)
        start = (x + self.eps * torch.where(stripes < 0.5, -1.0, 1.0).to(x.dtype)).clamp(0.0, 1.0)
        grid_r, grid_c = self._grids(x)

        def propose(it: int, on: Tensor, best: Tensor) -> Tensor:
            side = square_side(square_fraction(self.p_init, it, budget), height, width)
            u = uniforms[on, it]
            window, _, _ = _window(u[:, 0], u[:, 1], side, grid_r, grid_c)
            signs = torch.where(u[:, 2:] < 0.5, -1.0, 1.0).to(x.dtype).view(-1, channels, 1, 1)
            return torch.where(window, (x[on] + self.eps * signs).clamp(0.0, 1.0), best)

        return start, propose

    def _l2(self, x: Tensor, indices: Tensor, budget: int) -> tuple[Tensor, Proposal]:
        """L2 (the authors' Alg. 3): a grid of bumps with random signs to start; a candidate puts a new bump
        (plus the window's old content, renormalised) in window 1, moves the mass of window 2 there, and rescales
        the perturbation to norm eps."""
        eps = self.eps
        n, channels, height, width = x.shape
        draws = [self.generator(int(i), "square-l2") for i in indices]
        side0 = max(1, height // 5)
        offset = (
            height - side0 * 5
        ) // 2  # the authors' grid of bumps, as many as fit (5 x 5 on square images)
        cells = [(r, c) for r in range((height - offset) // side0) for c in range((width - offset) // side0)]
        init = torch.stack([torch.rand(len(cells), 1 + channels, generator=g) for g in draws]).to(x.device)
        # one row per iteration and query: window 1 (row, column), window 2 (row, column), transpose, signs
        uniforms = torch.stack([torch.rand(budget, 5 + channels, generator=g) for g in draws]).to(x.device)
        delta = torch.zeros_like(x)
        pattern0 = square_pattern(side0).to(x.device, x.dtype)
        for k, (r, c) in enumerate(cells):
            u = init[:, k]
            bumps = torch.where((u[:, :1] > 0.5).view(-1, 1, 1), pattern0.T, pattern0)  # per-query transpose
            signs = torch.where(u[:, 1:] < 0.5, -1.0, 1.0).to(x.dtype).view(n, channels, 1, 1)
            top, left = offset + r * side0, offset + c * side0
            delta[:, :, top : top + side0, left : left + side0] += bumps.unsqueeze(1) * signs
        start = (x + delta / _image_norm(delta) * eps).clamp(0.0, 1.0)
        grid_r, grid_c = self._grids(x)

        def propose(it: int, on: Tensor, best: Tensor) -> Tensor:
            side = max(3, round(math.sqrt(square_fraction(self.p_init, it, budget) * height * width)))
            side = min(side + 1 - side % 2, min(height, width))  # odd, as the authors', and inside the image
            u = uniforms[on, it]
            xs = x[on]
            current = best - xs
            first, top, left = _window(u[:, 0], u[:, 1], side, grid_r, grid_c)
            second, _, _ = _window(u[:, 2], u[:, 3], side, grid_r, grid_c)
            pattern = square_pattern(side).to(x.device, x.dtype)
            # the pattern laid into window 1 of each query (transposed where its draw says so)
            at = (
                ((grid_r - top).clamp(0, side - 1) * side + (grid_c - left).clamp(0, side - 1))
                .flatten(1)
                .long()
            )
            flat = torch.where((u[:, 4] > 0.5).view(-1, 1, 1), pattern.T, pattern).flatten(1)
            laid = torch.gather(flat, 1, at).view(-1, 1, height, width) * first
            signs = torch.where(u[:, 5:] < 0.5, -1.0, 1.0).to(x.dtype).view(-1, channels, 1, 1)
            proposal = laid * signs + current * first / (1e-10 + _window_norm(current * first))
            scale = (
                (eps**2 - _image_norm(current) ** 2).clamp_min(0) / channels
                + _window_norm(current * (first | second)) ** 2
            ).sqrt()
            proposal = proposal / _window_norm(proposal) * scale
            moved = torch.where(first, proposal, current * ~second)
            return (xs + moved / _image_norm(moved) * eps).clamp(0.0, 1.0)

        return start, propose

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "p_init": self.p_init,
            "continuous": self.continuous,
            "access": "code",
            "norm": self.norm,
        }


def _window(
    rows_u: Tensor, cols_u: Tensor, side: int, grid_r: Tensor, grid_c: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Each query's square window of ``side`` at a uniform position (from its two uniforms): the (N, 1, H, W)
    mask and its top and left."""
    top = (rows_u * (grid_r.shape[2] - side + 1)).floor().view(-1, 1, 1, 1)
    left = (cols_u * (grid_c.shape[3] - side + 1)).floor().view(-1, 1, 1, 1)
    inside = (grid_r >= top) & (grid_r < top + side) & (grid_c >= left) & (grid_c < left + side)
    return inside, top, left


def _image_norm(delta: Tensor) -> Tensor:
    """L2 norm of each image of a batch, shaped (N, 1, 1, 1)."""
    return delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _window_norm(delta: Tensor) -> Tensor:
    """L2 norm of each channel of each image (over height and width), shaped (N, C, 1, 1)."""
    return delta.pow(2).sum((2, 3), keepdim=True).sqrt()
