"""PgA-AT: adversarial training with PgA examples (PgA paper, appendix A.3, eq. 16)."""

from __future__ import annotations

from typing import ClassVar

from robusthash.defenses.base import register_defense
from robusthash.defenses.cgat import CgAT


@register_defense
class PgAAT(CgAT):
    """``min L_ori - (1/K) sum_i b*_i^T f(x'_i)`` (eq. 16) with x' from PgA (eq. 13: margin t = -0.8, mask,
    pharos code with Dice weights) run for a few steps (the CgAT budget: 7 steps of 2/255, random start).

    The paper does not say which bank the pharos codes come from; like CgAT, they come from the dynamic bank of
    the training set's latest codes (a documented choice). lambda = 1 gives eq. (16) exactly. Free training
    (``replays`` > 1) moves ``delta`` along eq. (16)'s own unmasked term, not PgA's masked objective.
    """

    name: ClassVar[str] = "pga-at"
    display_name: ClassVar[str] = "PgA-AT"
    paper: ClassVar[str] = "PgA paper, appendix A.3"
    weighting: ClassVar[str] = "pga"
    default_similarity: ClassVar[str] = "dice"
    masked: ClassVar[bool] = True
