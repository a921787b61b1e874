"""HAG (Yang et al., IEEE T-Cybernetics 2020): push the adversarial code away from the clean code."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import IterativeAttack, alpha_schedule, register_attack
from robusthash.codes import binarize
from robusthash.errors import UserError


@register_attack
class HAG(IterativeAttack):
    """Non-targeted, with the clean code ``b = sign(f(x))`` as the only reference.

    Loss (minimised), per query, as in the public re-implementations used by the PgA / CgAT papers:
    ``((1/M) sum_k m_k u_k b_k + 1)^2 + beta (mean_k u_k)^2`` with ``u = tanh(alpha h(x'))``, the mask
    ``m_k = [|u_k - b_k| < 1 + t]`` over the bits not yet flipped by margin t = 0.5, M = sum m, and the
    bit-balance weight beta = 1. alpha follows the public schedule (:func:`alpha_schedule`).

    Optimiser (default): SGD with lr 100 and momentum 0.9 for 2,000 iterations, projected to the eps-ball
    after each step. The public code averages the loss over a batch of 32; we sum per-query losses and divide
    by 32 so that the step does not depend on our batch size (a documented choice). ``optimizer="pgd"``
    switches to signed steps of ``step_size`` (the PGD-20 protocol of PgA Table 5).
    """

    name: ClassVar[str] = "hag"
    display_name: ClassVar[str] = "HAG"
    test_options: ClassVar[dict[str, Any]] = {"steps": 40}
    default_steps: ClassVar[int] = 2000
    paper: ClassVar[str] = "Yang et al., Adversarial examples for Hamming space search, TCYB 2020"

    def __init__(
        self,
        model: Any,
        *,
        margin: float = 0.5,
        beta: float = 1.0,
        optimizer: str = "sgd",
        lr: float = 100.0,
        momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if optimizer not in ("sgd", "pgd"):
            raise UserError(f"optimizer must be 'sgd' or 'pgd', got {optimizer!r}")
        self.margin, self.beta, self.optimizer = margin, beta, optimizer
        self.lr, self.momentum = lr, momentum

    def objective(self, u: Tensor, clean: Tensor) -> Tensor:
        """Per-query HAG loss (to be minimised)."""
        mask = ((u - clean).abs() < 1 + self.margin).to(u.dtype)
        m = mask.sum(1)
        agreement = (mask * u * clean).sum(1) / (m + 1e-8)
        return (agreement + 1).pow(2) + self.beta * u.mean(1).pow(2)

    @classmethod
    def protocol_options(cls, protocol: str) -> dict[str, Any]:
        options = super().protocol_options(protocol)
        return {**options, "optimizer": "pgd"} if protocol == "pgd20" else options

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        with torch.no_grad():
            clean = binarize(self.model.preactivation(x))

        def loss(x_adv: Tensor, step: int) -> Tensor:
            value = self.objective(self.code_output(x_adv, alpha_schedule(step, self.steps)), clean).sum()
            return value if self.optimizer == "pgd" else value / 32

        return self.optimise(x, loss, self.optimizer, self.lr, momentum=self.momentum)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "optimizer": self.optimizer, "margin": self.margin, "beta": self.beta}
