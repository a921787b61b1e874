"""DPH, the pairwise hashing model the PgA paper attacks by default (its eq. used by HAG/DHTA code bases)."""

from __future__ import annotations

from torch import Tensor

from robusthash.losses.base import BankLoss, pairwise_similarity, register_loss


@register_loss
class DPHLoss(BankLoss):
    """``mean_ij (u_i^T U_j / K - S_ij)^2`` with ``S`` in {-1, +1} over the training-code bank ``U``."""

    name = "dph"
    display_name = "DPH"

    def forward(self, u: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        bank = self.update_bank(u, labels, indices)
        s = 2 * pairwise_similarity(labels, self.Y) - 1
        return (u @ bank.T / self.bits - s).pow(2).mean()
