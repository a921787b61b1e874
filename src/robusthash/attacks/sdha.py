"""SDHA (Lu et al., ICMR 2021): away from the codes of the query's relevant training items."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import IterativeAttack, alpha_schedule, register_attack
from robusthash.codes import binarize, hamming_distance
from robusthash.errors import UserError
from robusthash.models.fixed_rows import in_blocks


def _g(s: Tensor, sigma: float) -> Tensor:
    sig = torch.sigmoid(sigma * s)
    return 0.5 * (1 - s) * sig + (1 - sig)


def surrogate_distance(q: Tensor, r: Tensor, sigma: float = 5.0) -> Tensor:
    """SDHA's smooth Hamming distance ``0.5 sum_k |q_k - r_k| s(sigma q_k r_k) + sum_k (1 - s(sigma q_k r_k))``
    between continuous codes q (B, K) and binary codes r (N, K), shape (B, N).

    With r in {-1, +1} and |q| <= 1, ``|q_k - r_k| = 1 - q_k r_k``, so each term is ``g(q_k r_k)`` and, r_k
    being +-1, the whole sum is linear in r: ``A(q) + D(q) r^T``. One matrix product replaces the per-pair loop
    of the public code (the test checks both agree).
    """
    gp, gn = _g(q, sigma), _g(-q, sigma)
    return (0.5 * (gp + gn)).sum(1, keepdim=True) + (0.5 * (gp - gn)) @ r.T


@register_attack
class SDHA(IterativeAttack):
    """Non-targeted: maximise the weighted surrogate distance to every relevant training code.

    Minimises ``MSE(x', x) + (25 / K) S`` with ``S = -mean_r [d(u, r) (D_H(sign u, r) + 1e-8)^(-1/2)]`` over
    the relevant codes r (items of the reference bank sharing a label; the query's own clean code when there
    are none), ``u = tanh(alpha h(x'))`` with the public alpha schedule. Adam (lr 0.01) for 1,500 iterations,
    projected to the eps-ball after each step; ``optimizer="pgd"`` for the PGD-20 protocol.
    """

    name: ClassVar[str] = "sdha"
    display_name: ClassVar[str] = "SDHA"
    test_options: ClassVar[dict[str, Any]] = {"steps": 40}
    default_steps: ClassVar[int] = 1500
    paper: ClassVar[str] = (
        "Lu et al., A smart adversarial attack on deep hashing based image retrieval, ICMR 2021"
    )

    def __init__(
        self,
        model: Any,
        *,
        optimizer: str = "adam",
        lr: float = 0.01,
        weight: float = 25.0,
        sigma: float = 5.0,
        power: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if optimizer not in ("adam", "pgd"):
            raise UserError(f"optimizer must be 'adam' or 'pgd', got {optimizer!r}")
        self.optimizer, self.lr, self.weight, self.sigma, self.power = optimizer, lr, weight, sigma, power

    def objective(self, x_adv: Tensor, x: Tensor, u: Tensor, relevant: Tensor, codes: Tensor) -> Tensor:
        """Per-query SDHA loss (to be minimised); ``relevant`` (B, N) 0/1 over ``codes`` (N, K)."""
        dist = surrogate_distance(u, codes, self.sigma)
        with torch.no_grad():
            w = (hamming_distance(binarize(u), codes) + 1e-8).pow(-self.power)
        surrogate = -(relevant * dist * w).sum(1) / relevant.sum(1)
        mse = (x_adv - x).pow(2).flatten(1).mean(1)
        return mse + self.weight / u.shape[1] * surrogate

    @classmethod
    def protocol_options(cls, protocol: str) -> dict[str, Any]:
        options = super().protocol_options(protocol)
        return {**options, "optimizer": "pgd"} if protocol == "pgd20" else options

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        bank = self.require_reference()
        codes = bank.codes.to(x.device, x.dtype)
        relevant = ((labels.to(x.dtype) @ bank.labels.to(x.device, x.dtype).T) > 0).to(x.dtype)
        with torch.no_grad():
            clean = binarize(self.model.preactivation(x))
        none = relevant.sum(1) == 0
        if none.any():  # no relevant training item: the query's own clean code is the reference
            codes = torch.cat([codes, clean[none]])
            extra = torch.zeros(x.shape[0], int(none.sum()), device=x.device, dtype=x.dtype)
            extra[none.nonzero()[:, 0], torch.arange(int(none.sum()), device=x.device)] = 1
            relevant = torch.cat([relevant, extra], 1)

        def loss(x_adv: Tensor, step: int) -> Tensor:
            def per_query(xa: Tensor, xc: Tensor, rel: Tensor) -> Tensor:
                return self.objective(
                    xa, xc, self.code_output(xa, alpha_schedule(step, self.steps)), rel, codes
                )

            # the products with the bank are GEMMs over the batch too: fixed blocks, like the model's calls
            return in_blocks(per_query, self.block_rows, x_adv, x, relevant).sum()

        return self.optimise(x, loss, self.optimizer, self.lr, betas=(0.9, 0.999))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "optimizer": self.optimizer}
