"""HashNet (Cao et al., ICCV 2017): weighted pairwise likelihood, learnt by continuation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from robusthash.losses.base import BankLoss, pairwise_similarity, register_loss


@register_loss
class HashNetLoss(BankLoss):
    """Codes ``u = tanh(beta h)`` with beta growing by continuation, then the weighted pairwise likelihood

    ``sum_ij w_ij [log(1 + e^{theta_ij}) - s_ij theta_ij] / sum_ij w_ij`` with ``theta = alpha u U^T``, over the
    bank U of the training outputs (batch rows live), and ``w_ij = S / S_1`` for similar pairs, ``S / S_0`` for
    dissimilar ones (S_1, S_0 their counts in the batch-bank matrix, S = S_0 + S_1), which balances them.

    Continuation (HashNet sec. 3.3): ``beta = (1 + gamma t)^power`` with t the training step, gamma = 0.005,
    power = 0.5, refreshed every ``step_size`` = 200 steps as in the public code. alpha = 10 / K by default,
    so the logits stay within |theta| <= 10 at every K (the scaling of the HashNet authors' released script, as
    we read it), where DeepHash-pytorch's fixed 0.1 caps |theta| at 0.1 K (docs/choices.md, "HashNet's scale").
    The bank stores
    ``tanh(beta h)``; the model's own ``tanh(h)`` keeps the same sign, so codes and attacks are unaffected by beta.
    """

    name = "hashnet"
    display_name = "HashNet"
    takes_logits = True

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        alpha: float | None = None,
        gamma: float = 0.005,
        power: float = 0.5,
        step_size: int = 200,
        live_batch: bool = True,
    ) -> None:
        super().__init__(bits, num_classes, num_train, live_batch)
        self.alpha = 10.0 / bits if alpha is None else alpha
        self.gamma, self.power, self.step_size = gamma, power, step_size
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def beta(self) -> float:
        t = int(self.step) // self.step_size * self.step_size
        return math.pow(1.0 + self.gamma * t, self.power)

    def preinstall(self, outputs: Tensor, labels: Tensor) -> None:
        super().preinstall(torch.tanh(self.beta * torch.atanh(outputs.clamp(-0.999999, 0.999999))), labels)

    def forward(self, h: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        u = torch.tanh(self.beta * h)
        if self.training:
            self.step += 1
        bank = self.update_bank(u, labels, indices)
        s = pairwise_similarity(labels, self.Y)
        theta = self.alpha * u @ bank.T
        loss = F.softplus(theta) - s * theta
        positive = s > 0
        n_pos, n_neg = positive.sum(), (~positive).sum()
        total = n_pos + n_neg
        weights = torch.where(positive, total / n_pos.clamp_min(1), total / n_neg.clamp_min(1))
        return (weights * loss).sum() / total
