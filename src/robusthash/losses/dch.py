"""DCH (Cao et al., CVPR 2018): Cauchy cross-entropy in Hamming space."""

from __future__ import annotations

import torch
from torch import Tensor

from robusthash.losses.base import HashLoss, pairwise_similarity, register_loss


def cauchy_distance(a: Tensor, b: Tensor, bits: int) -> Tensor:
    """DCH eq. (6): the normalised Euclidean distance ``d = (K / 2)(1 - cos(a, b))``, cos capped at 0.99."""
    norms = a.norm(dim=1, keepdim=True) @ b.norm(dim=1, keepdim=True).T
    cos = (a @ b.T) / norms.clamp_min(1e-4)
    return (1 - cos.clamp(max=0.99)) * bits / 2


@register_loss
class DCHLoss(HashLoss):
    """``mean_ij w_ij [s_ij log(d_ij / gamma) + log(1 + gamma / d_ij)] + lambda mean_i log(1 + d(|u_i|, 1) / gamma)``

    over the pairs of the batch (DCH eqs. 2, 7-9): the Cauchy cross-entropy with class-balance weights
    ``w_ij = S / S_1`` (similar) or ``S / S_0`` (dissimilar) when both kinds occur, plus the Cauchy quantisation
    loss pulling |u| to the all-ones vector. gamma = 20, lambda = 0.1.
    """

    name = "dch"
    display_name = "DCH"

    def __init__(
        self, bits: int, num_classes: int, num_train: int = 0, gamma: float = 20.0, lam: float = 0.1
    ) -> None:
        super().__init__()
        self.bits, self.gamma, self.lam = bits, gamma, lam

    def forward(self, u: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        s = pairwise_similarity(labels, labels)
        n_pos, n_neg = s.sum(), (1 - s).sum()
        if n_pos > 0 and n_neg > 0:
            w = s * s.numel() / n_pos + (1 - s) * s.numel() / n_neg
        else:
            w = torch.ones_like(s)
        d = cauchy_distance(u, u, self.bits)
        cauchy = w * (s * torch.log(d / self.gamma) + torch.log1p(self.gamma / d))
        quant = torch.log1p(cauchy_distance(u.abs(), torch.ones_like(u[:1]), self.bits) / self.gamma)
        return cauchy.mean() + self.lam * quant.mean()
