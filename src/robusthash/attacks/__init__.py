"""Attacks by name: ``create_attack(name, model, ...)``, ``list_attacks()``, ``attack_class(name)``.

Each attack is one module of this package that registers itself with ``@register_attack``; every module here
is imported, so adding an attack touches only its own file (and its test).
"""

from __future__ import annotations

from typing import Any

from robusthash.attacks.base import (  # noqa: I001
    ATTACKS,
    PROTOCOLS,
    THREAT_MODELS,
    Attack,
    CodeBank,
    IterativeAttack,
    QueryAttack,
    alpha_schedule,
    derive_seed,
    project_linf,
    query_generator,
    register_attack,
    stable_tanh,
)
from robusthash.errors import UserError
from robusthash.registry import import_submodules

import_submodules(__name__, __path__, skip=lambda name: name == "base")

from robusthash.attacks.cascade import RobustCascade  # noqa: E402
from robusthash.attacks.dhta import DHTA  # noqa: E402
from robusthash.attacks.hag import HAG  # noqa: E402
from robusthash.attacks.nag import NAG  # noqa: E402
from robusthash.attacks.p2p import P2P  # noqa: E402
from robusthash.attacks.pga import PgA, PgADagger  # noqa: E402
from robusthash.attacks.prosgan import ProSGAN  # noqa: E402
from robusthash.attacks.qair import QAIR  # noqa: E402
from robusthash.attacks.saat import SAAT  # noqa: E402
from robusthash.attacks.sdha import SDHA  # noqa: E402
from robusthash.attacks.square import Square  # noqa: E402
from robusthash.attacks.tha import THA  # noqa: E402


def list_attacks() -> list[str]:
    return ATTACKS.names()


def attack_class(name: str) -> type[Attack]:
    return ATTACKS.get(name)


def create_attack(name: str, model: Any, **options: Any) -> Attack:
    """Build a registered attack on ``model``; ``options`` go to its constructor (eps, steps, seed, ...)."""
    cls = attack_class(name)
    try:
        return cls(model, **options)
    except TypeError as exc:
        raise UserError(f"bad option for attack {name!r}: {exc}") from exc


__all__ = [
    "ATTACKS",
    "PROTOCOLS",
    "THREAT_MODELS",
    "Attack",
    "CodeBank",
    "DHTA",
    "HAG",
    "IterativeAttack",
    "P2P",
    "PgA",
    "PgADagger",
    "ProSGAN",
    "QAIR",
    "QueryAttack",
    "RobustCascade",
    "NAG",
    "SAAT",
    "SDHA",
    "Square",
    "THA",
    "alpha_schedule",
    "attack_class",
    "create_attack",
    "derive_seed",
    "list_attacks",
    "project_linf",
    "query_generator",
    "register_attack",
    "stable_tanh",
]
