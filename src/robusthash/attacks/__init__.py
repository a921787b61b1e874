"""Attacks by name: ``create_attack(name, model, ...)`` and ``list_attacks()``."""

from __future__ import annotations

from typing import Any

from robusthash.attacks.base import Attack, CodeBank, alpha_schedule, project_linf, stable_tanh
from robusthash.attacks.dhta import DHTA
from robusthash.attacks.hag import HAG
from robusthash.attacks.p2p import P2P
from robusthash.attacks.pga import PgA, PgADagger
from robusthash.attacks.sdha import SDHA
from robusthash.attacks.tha import THA
from robusthash.errors import UserError

_REGISTRY: dict[str, type[Attack]] = {cls.name: cls for cls in (PgA, PgADagger, HAG, SDHA, P2P, DHTA, THA)}


def register_attack(cls: type[Attack]) -> type[Attack]:
    _REGISTRY[cls.name] = cls
    return cls


def list_attacks() -> list[str]:
    return sorted(_REGISTRY)


def attack_class(name: str) -> type[Attack]:
    if name not in _REGISTRY:
        raise UserError(f"unknown attack {name!r}; valid: {', '.join(list_attacks())}")
    return _REGISTRY[name]


def create_attack(name: str, model: Any, **options: Any) -> Attack:
    """Build a registered attack on ``model``; ``options`` go to its constructor (eps, steps, seed, ...)."""
    cls = attack_class(name)
    try:
        return cls(model, **options)
    except TypeError as exc:
        raise UserError(f"bad option for attack {name!r}: {exc}") from exc


__all__ = [
    "Attack",
    "CodeBank",
    "DHTA",
    "HAG",
    "P2P",
    "PgA",
    "PgADagger",
    "SDHA",
    "THA",
    "alpha_schedule",
    "attack_class",
    "create_attack",
    "list_attacks",
    "project_linf",
    "register_attack",
    "stable_tanh",
]
