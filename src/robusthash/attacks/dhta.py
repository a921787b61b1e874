"""DHTA (Bai et al., ECCV 2020): P2P with an anchor code voted by nine database items of the target label."""

from __future__ import annotations

from typing import ClassVar

from robusthash.attacks.base import register_attack
from robusthash.attacks.p2p import P2P


@register_attack
class DHTA(P2P):
    """Targeted; the anchor is ``sign`` of the sum of the codes of n_t = 9 items of the target label."""

    name: ClassVar[str] = "dhta"
    display_name: ClassVar[str] = "DHTA"
    n_anchor: ClassVar[int] = 9
