"""Square attack (Andriushchenko et al., ECCV 2020), L-inf, on the pharos objective through a code oracle."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import QueryAttack, register_attack
from robusthash.codes import pharos_code
from robusthash.errors import UserError
from robusthash.oracle import QueryOracle

# (iteration as a fraction of 10,000, divisor of p_init) of the public code's p_selection
_P_SCHEDULE: tuple[tuple[int, int], ...] = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                                            (4000, 64), (6000, 128), (8000, 256), (10000, 512))  # fmt: skip


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
    L-inf default.
    """

    name: ClassVar[str] = "square"
    display_name: ClassVar[str] = "Square"
    test_options: ClassVar[dict[str, Any]] = {"budget": 150}
    default_budget: ClassVar[int] = 1000
    paper: ClassVar[str] = "Andriushchenko et al., Square Attack, ECCV 2020 (code oracle, pharos objective)"

    def __init__(self, model: Any, *, p_init: float = 0.05, continuous: bool = True, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not 0 < p_init <= 1:
            raise UserError(f"p_init must lie in (0, 1], got {p_init}")
        self.p_init = float(p_init)
        self.continuous = bool(continuous)

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        db = self.require_database()
        anchor = pharos_code(labels, db.codes.to(x.device), db.labels.to(x.device)).to(x.dtype)
        return self.search(x, anchor, indices, self.oracle(len(x), "code", self.continuous), track=True)

    def search(self, x: Tensor, anchor: Tensor, indices: Tensor, oracle: QueryOracle, track: bool = False) -> Tensor:
        """The best image found for each query within the oracle's budget (``track``: record the queries used
        and the checkpoint codes, as this attack's own run does; the robust cascade's stage does not)."""
        budget = oracle.budget
        n, channels, height, width = x.shape
        draws = [self.generator(int(i), "square") for i in indices]
        stripes = torch.stack([torch.rand(channels, 1, width, generator=g) for g in draws]).to(x.device)
        # one row of uniforms per iteration and query: window row, window column, one sign per channel
        uniforms = torch.stack([torch.rand(budget, 2 + channels, generator=g) for g in draws]).to(x.device)
        best = (x + self.eps * torch.where(stripes < 0.5, -1.0, 1.0).to(x.dtype)).clamp(0.0, 1.0)
        everyone = torch.arange(n)
        loss = pharos_agreement(oracle(best, everyone), anchor)
        self.step_done()
        rows_grid = torch.arange(height, device=x.device).view(1, 1, height, 1)
        cols_grid = torch.arange(width, device=x.device).view(1, 1, 1, width)
        for it in range(1, budget):
            active = torch.nonzero(loss > -1)[:, 0].cpu()
            if track:
                self.record(oracle.spent, best, indices)
            if len(active) == 0:
                break
            side = square_side(square_fraction(self.p_init, it, budget), height, width)
            u = uniforms[active.to(x.device), it]
            top = (u[:, 0] * (height - side + 1)).floor().view(-1, 1, 1, 1)
            left = (u[:, 1] * (width - side + 1)).floor().view(-1, 1, 1, 1)
            window = (rows_grid >= top) & (rows_grid < top + side) & (cols_grid >= left) & (cols_grid < left + side)
            signs = torch.where(u[:, 2:] < 0.5, -1.0, 1.0).to(x.dtype).view(-1, channels, 1, 1)
            on = active.to(x.device)
            candidate = torch.where(window, (x[on] + self.eps * signs).clamp(0.0, 1.0), best[on])
            new_loss = pharos_agreement(oracle(candidate, active), anchor[on])
            better = new_loss < loss[on] if self.continuous else new_loss <= loss[on]
            best[on[better]] = candidate[better]
            loss[on[better]] = new_loss[better]
            self.step_done()
        if track:
            self.record(oracle.spent, best, indices, final=True)
        return best

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "p_init": self.p_init, "continuous": self.continuous, "access": "code"}
