"""CSQ (Yuan et al., CVPR 2020): pull each code to its hash center."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from robusthash.losses.base import HashLoss, register_loss


def sylvester_hadamard(n: int) -> Tensor:
    """The n x n Sylvester Hadamard matrix (n a power of two): H_2n = [[H, H], [H, -H]]."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester Hadamard needs a power of two, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hash_centers(num_classes: int, bits: int, generator: torch.Generator, tries: int = 200) -> Tensor:
    """Class centers in {-1, +1}^K (CSQ Algorithm 1).

    K a power of two and ``num_classes <= 2K``: rows of ``[H_K; -H_K]`` (pairwise distance >= K/2). Otherwise
    random balanced codes (K/2 ones), redrawn until the minimum pairwise distance reaches K/4 and the mean
    K/2 (the CSQ authors' check); after ``tries`` draws the set with the largest minimum is kept, with a
    warning when it stays below K/4 (unavoidable for tiny K and many classes).
    """
    if bits >= 1 and bits & (bits - 1) == 0 and num_classes <= 2 * bits:
        h = sylvester_hadamard(bits)
        return torch.cat([h, -h], 0)[:num_classes].clone()
    best, best_min = None, -1.0
    for _ in range(tries):
        scores = torch.rand(num_classes, bits, generator=generator)
        ranks = scores.argsort(1).argsort(1)
        centers = torch.where(ranks < bits // 2, -1.0, 1.0)
        dist = 0.5 * (bits - centers @ centers.T)
        off = dist[~torch.eye(num_classes, dtype=torch.bool)]
        min_d = float(off.min()) if off.numel() else float(bits)
        if min_d > best_min:
            best, best_min = centers, min_d
        if min_d >= bits / 4 and (off.numel() == 0 or float(off.mean()) >= bits / 2):
            return centers
    if best_min < bits / 4:
        warnings.warn(f"CSQ centers for K={bits}: minimum distance {best_min:.0f} < K/4", stacklevel=2)
    assert best is not None
    return best


@register_loss
class CSQLoss(HashLoss):
    """``BCE((u+1)/2, (c+1)/2) + lambda mean(|u| - 1)^2`` with ``c`` the hash center of the item's labels.

    Multi-label items take the sign of the sum of their label centers (CSQ sec. 3.2); bits where that sum is
    zero take a fixed random bit. A single-label item gets its class center exactly, so one code path serves
    both. ``lam`` defaults to 1e-4 as in the public CSQ code. Centers are drawn from ``seed``.
    """

    name = "csq"
    display_name = "CSQ"

    def __init__(
        self, bits: int, num_classes: int, num_train: int = 0, lam: float = 1e-4, seed: int = 0
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("centers", hash_centers(num_classes, bits, g))
        self.register_buffer("fill", torch.where(torch.rand(bits, generator=g) < 0.5, -1.0, 1.0))
        self.lam = lam

    def target(self, labels: Tensor) -> Tensor:
        total = labels.to(self.centers.dtype) @ self.centers
        return torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, self.fill.expand_as(total)))

    def forward(self, u: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        center = self.target(labels)
        p = ((u + 1) / 2).clamp(1e-6, 1 - 1e-6)
        center_loss = F.binary_cross_entropy(p, (center + 1) / 2)
        return center_loss + self.lam * (u.abs() - 1).pow(2).mean()
