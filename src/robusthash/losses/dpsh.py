"""DPSH (Li, Wang and Kang, IJCAI 2016): pairwise likelihood plus quantisation; the CgAT default ``L_ori``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robusthash.losses.base import BankLoss, pairwise_similarity, register_loss


@register_loss
class DPSHLoss(BankLoss):
    """``mean_ij [log(1 + e^theta_ij) - s_ij theta_ij] + eta mean (u - sign u)^2`` with ``theta = u U^T / 2``.

    ``U`` is the bank of the latest outputs of the whole training set (the DeepHash-pytorch formulation the
    CgAT code uses); ``s_ij = 1`` when items share a label. ``eta`` defaults to 0.001 as in the CgAT code
    (not DeepHash-pytorch's 0.1: docs/choices.md, "DPSH's quantisation weight").
    """

    name = "dpsh"
    display_name = "DPSH"

    def __init__(
        self, bits: int, num_classes: int, num_train: int, eta: float = 0.001, live_batch: bool = True
    ) -> None:
        super().__init__(bits, num_classes, num_train, live_batch)
        self.eta = eta

    def forward(self, u: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        bank = self.update_bank(u, labels, indices)
        s = pairwise_similarity(labels, self.Y)
        theta = 0.5 * u @ bank.T
        likelihood = (F.softplus(theta) - s * theta).mean()
        quantization = (u - u.sign()).pow(2).mean()
        return likelihood + self.eta * quantization
