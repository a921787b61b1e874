"""A rank-only attack: QAIR's relevance objective (Li et al., CVPR 2021) driven by SignHunter (Al-Dujaili and
O'Reilly, ICLR 2020)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import QueryAttack, register_attack


def relevance(original: Tensor, returned: Tensor) -> Tensor:
    """QAIR's relevance of a returned list to the original one, per query, in [0, 1]: the rank-weighted share
    of the original top-k (``original`` (N, k) database indices) that the perturbed query still retrieves
    (``returned`` (N, k)). The item at original rank r weighs ``k - r`` (r from 0), normalised to sum 1, so
    pushing the best matches out counts most; 0 when none of the original list comes back."""
    k = original.shape[1]
    weight = torch.arange(k, 0, -1, dtype=torch.float64, device=original.device)
    kept = (original.unsqueeze(2) == returned.unsqueeze(1)).any(2).double()
    return (kept * weight).sum(1) / weight.sum()


def signhunter_chunk(iteration: int, size: int) -> tuple[int, int]:
    """The slice ``[start, stop)`` of the flattened sign vector (of length ``size``) that SignHunter flips at
    ``iteration``: at depth h the vector is cut into 2^h chunks of ceil(size / 2^h), flipped in order; after
    the last chunk of a depth comes depth h + 1, and after depth ceil(log2 size) (single coordinates) depth 0
    again."""
    depths = math.ceil(math.log2(size)) + 1 if size > 1 else 1
    per_cycle = sum(math.ceil(size / math.ceil(size / 2**h)) for h in range(depths))
    i = iteration % per_cycle
    for h in range(depths):
        length = math.ceil(size / 2**h)
        chunks = math.ceil(size / length)
        if i < chunks:
            return i * length, min(size, (i + 1) * length)
        i -= chunks
    raise AssertionError("unreachable")


@register_attack
class QAIR(QueryAttack):
    """Rank-only access: the oracle returns the top-``oracle_topk`` database indices, nothing else.

    One query buys the clean query's list ``T(x)``. The attack minimises :func:`relevance` of ``T(x')`` to
    ``T(x)`` with SignHunter: the perturbation is ``eps * s`` for a sign vector s (all +1 at the start, the
    paper's choice), and iteration i flips the chunk :func:`signhunter_chunk` of s, keeping the flip when the
    relevance does not rise (ties kept: the objective is piecewise constant, a walk on its plateaus is how it
    moves). One image per iteration and query; a query stops at relevance 0. Deterministic (SignHunter
    draws nothing), so its seed changes nothing.
    """

    name: ClassVar[str] = "qair"
    display_name: ClassVar[str] = "QAIR (rank-only)"
    test_options: ClassVar[dict[str, Any]] = {"budget": 150, "oracle_topk": 20}
    default_budget: ClassVar[int] = 1000
    paper: ClassVar[str] = (
        "Li et al., QAIR, CVPR 2021 (relevance objective); Al-Dujaili and O'Reilly, SignHunter, ICLR 2020"
    )

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        oracle = self.oracle(len(x), "rank")
        n = x.shape[0]
        size = x[0].numel()
        everyone = torch.arange(n)
        original = oracle(x, everyone)
        self.step_done()
        signs = torch.ones(n, size, device=x.device, dtype=x.dtype)
        best = (x + self.eps * signs.view_as(x)).clamp(0.0, 1.0)
        score = relevance(original, oracle(best, everyone))
        self.step_done()
        for it in range(self.budget - 2):
            active = torch.nonzero(score > 0)[:, 0].cpu()
            self.record(oracle.spent, best, indices)
            if len(active) == 0:
                break
            on = active.to(x.device)
            start, stop = signhunter_chunk(it, size)
            flipped = signs[on].clone()
            flipped[:, start:stop] *= -1
            candidate = (x[on] + self.eps * flipped.view(-1, *x.shape[1:])).clamp(0.0, 1.0)
            new = relevance(original[on], oracle(candidate, active))
            keep = (new <= score[on]).to(x.device)
            signs[on[keep]] = flipped[keep]
            best[on[keep]] = candidate[keep]
            score[on[keep]] = new[keep]
            self.step_done()
        self.record(oracle.spent, best, indices, final=True)
        return best

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "access": "rank", "optimizer": "signhunter"}
