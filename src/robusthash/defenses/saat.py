"""SAAT, semantic-aware adversarial training (Yuan et al., IEEE TIFS 2023; public code xandery-geek/SAAT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from robusthash.config import check_finite, option
from robusthash.defenses.base import register_defense
from robusthash.defenses.cgat import CenterOptions, CgAT
from robusthash.errors import UserError


@dataclass
class SAATOptions(CenterOptions):
    """SAAT's options: CgAT's (lambda, the mainstay code's label similarity) and the quantisation weight mu."""

    mu: float = option(1e-4, "weight mu of the quantisation loss on the adversarial outputs (SAAT's p_mu)")

    def validate(self) -> None:
        super().validate()
        check_finite(mu=self.mu)
        if self.mu < 0:
            raise UserError(f"mu must be >= 0, got {self.mu}")


@register_defense
class SAAT(CgAT):
    """The min-max of SAAT's ``adv_training.py``, each step for a batch (x, y):

    1. adversarial examples minimising ``mean(f(x') o b_m)`` toward nothing, i.e. away from the mainstay codes
       ``b_m`` (SAAT's DMFL: ``sign(sum of positive codes weighted by cosine label similarity, normalised,
       minus the normalised sum of negative codes)``, :func:`robusthash.codes.pharos_code` with the ``saat``
       weighting) by PGD, 7 steps of 2/255 in 8/255 from a random start, unmasked;
    2. ``L = L_ori(f(x)) - lambda mean(f(x') o b_m) + mu mean((f(x') - sign f(x'))^2)``, lambda = 1,
       mu = 1e-4, with the mainstay codes recomputed from the bank after this step's clean codes entered it.

    The bank holds sign(f(x)) of the latest step of each training item, as CgAT's does. SGD lr 0.05 without
    momentum, weight decay 1e-5, the rate dropped 10x at 1/2 and 3/4 of the steps (the public code). As for
    every defence here, the attack runs with the model in eval mode (the public code leaves it in train mode).
    The mean over bits and batch of eq. (10)'s ``b^T f / K`` is the public code's ``torch.mean(adv * target)``.
    """

    name: ClassVar[str] = "saat"
    display_name: ClassVar[str] = "SAAT"
    default_optimizer: ClassVar[tuple[str, float]] = ("sgd", 0.05)
    default_sgd: ClassVar[tuple[float, float]] = (0.0, 1e-5)
    paper: ClassVar[str] = (
        "Yuan et al., Semantic-aware adversarial training for reliable deep hashing retrieval"
    )
    weighting: ClassVar[str] = "saat"
    default_similarity: ClassVar[str] = "cosine"
    Options: ClassVar[type] = SAATOptions

    def extra_terms(self, adv_outputs: Tensor) -> dict[str, Tensor]:
        quantisation = (adv_outputs - adv_outputs.sign()).pow(2).mean()
        return {"qua": self.options.mu * quantisation}
