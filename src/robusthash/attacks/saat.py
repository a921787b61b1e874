"""SAAT's attack (Yuan et al., Semantic-aware adversarial training for reliable deep hashing retrieval, IEEE TIFS
2023): PgA's objective with SAAT's mainstay code and SAAT's mask and weight."""

from __future__ import annotations

from typing import Any, ClassVar

from robusthash.attacks.base import register_attack
from robusthash.attacks.pga import PgA


@register_attack
class SAAT(PgA):
    """Non-targeted: push the code of x' away from SAAT's mainstay code of x.

    - Target code: the mainstay code, :func:`~robusthash.codes.pharos_code` with ``weighting="saat"``
      (positives weighted by cosine label similarity normalised to sum 1, negatives uniformly). On single-label
      data it equals the pharos code bit for bit.
    - Loss: PgA's eq. (13) form ``-(1/pi) sum_k m_k omega_k u_k`` with SAAT's mask ``m_k = [u_k > -0.5]`` and weight
      ``omega_k = u_k + 2`` (PgA's ``u_k - 2t`` at t = -1), used as a fixed weight (``omega="constant"``: the
      public description says the loss is *weighted by* u + 2; documented choice).
    - PGD: 100 steps of 1/255 in the 8/255 ball from a random start, through ``tanh(alpha h)`` with the HAG / DHTA
      scale schedule (0.1 for half the steps, then 0.2, 0.3, 0.5, 0.7, 1.0) and the exact tanh derivative.
    """

    name: ClassVar[str] = "saat"
    display_name: ClassVar[str] = "SAAT"
    test_options: ClassVar[dict[str, Any]] = {"steps": 30}
    paper: ClassVar[str] = "Yuan et al., Semantic-aware adversarial training for deep hashing, TIFS 2023"

    def __init__(self, model: Any, **kwargs: Any) -> None:
        options = {
            "margin": -0.5,
            "omega_margin": -1.0,
            "omega": "constant",
            "weighting": "saat",
            "alpha": "schedule",
            "surrogate_gradient": False,
            **kwargs,
        }
        super().__init__(model, **options)
