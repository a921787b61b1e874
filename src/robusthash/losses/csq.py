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


CENTER_RULES = ("farthest", "random", "hadamard+random")


def balanced_codes(rows: int, bits: int, generator: torch.Generator) -> Tensor:
    """``rows`` random codes in {-1, +1}^K with K/2 entries -1 each (the CSQ Bernoulli step)."""
    ranks = torch.rand(rows, bits, generator=generator).argsort(1).argsort(1)
    return torch.where(ranks < bits // 2, -1.0, 1.0)


def center_distances(centers: Tensor) -> Tensor:
    """Pairwise Hamming distances between distinct centers (a flat tensor)."""
    bits, n = centers.shape[1], centers.shape[0]
    dist = 0.5 * (bits - centers @ centers.T)
    return dist[~torch.eye(n, dtype=torch.bool)]


def hash_centers(
    num_classes: int, bits: int, generator: torch.Generator, tries: int = 200, rule: str = "farthest"
) -> Tensor:
    """Class centers in {-1, +1}^K (CSQ Algorithm 1).

    K a power of two and ``num_classes <= 2K``: rows of ``[H_K; -H_K]`` (pairwise distance >= K/2). Beyond
    that, ``rule``:

    - ``"random"`` (robusthash): every center balanced at random (K/2 ones), redrawn until the minimum
      pairwise distance reaches K/4 and the mean K/2 (the CSQ authors' check); after ``tries`` draws the set
      with the largest minimum is kept, with a warning when it stays below K/4.
    - ``"hadamard+random"`` (DeepHash-pytorch's ``get_hash_targets``; needs K a power of two, else
      ``"random"``): the 2K rows of ``[H_K; -H_K]`` kept, only the remaining centers drawn, up to 20 times
      until the minimum exceeds K/4 and the mean reaches K/2; the last draw is kept either way.
    - ``"farthest"`` (the default; ``"random"`` when K is not a power of two): both sets, drawn in that
      order from ``generator``; the one with the larger minimum distance is kept (ties: the larger mean,
      then ``"random"``'s). Neither rule wins at every K (docs/choices.md, "CSQ: centers beyond 2K classes").
    """
    if rule not in CENTER_RULES:
        raise ValueError(f"CSQ center rule must be one of {', '.join(CENTER_RULES)}, got {rule!r}")
    power_of_two = bits >= 1 and bits & (bits - 1) == 0
    if power_of_two and num_classes <= 2 * bits:
        h = sylvester_hadamard(bits)
        return torch.cat([h, -h], 0)[:num_classes].clone()
    if rule == "farthest" and power_of_two:
        drawn = [hash_centers(num_classes, bits, generator, tries, r) for r in CENTER_RULES[1:]]
        spread = [(float(d.min()), float(d.mean())) for d in map(center_distances, drawn)]
        return drawn[0] if spread[0] >= spread[1] else drawn[1]
    if rule == "hadamard+random" and power_of_two:
        h = sylvester_hadamard(bits)
        kept = torch.cat([h, -h], 0)
        for _ in range(20):
            centers = torch.cat([kept, balanced_codes(num_classes - 2 * bits, bits, generator)], 0)
            off = center_distances(centers)
            if float(off.min()) > bits / 4 and float(off.mean()) >= bits / 2:
                break
        return centers
    best, best_min = None, -1.0
    for _ in range(tries):
        centers = balanced_codes(num_classes, bits, generator)
        off = center_distances(centers)
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
    both. ``lam`` defaults to 1e-4 as in the public CSQ code. Centers are drawn from ``seed`` by
    :func:`hash_centers` under ``centers`` (its ``rule``).
    """

    name = "csq"
    display_name = "CSQ"

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int = 0,
        lam: float = 1e-4,
        seed: int = 0,
        centers: str = "farthest",
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("centers", hash_centers(num_classes, bits, g, rule=centers))
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
