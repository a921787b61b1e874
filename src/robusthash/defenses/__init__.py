"""Defences by name: ``defense_class(name)``, ``list_defenses()`` and :func:`defend`."""

from __future__ import annotations

from robusthash.defenses.atrdh import ATRDH
from robusthash.defenses.base import AdversarialTraining, DefenseConfig, DefenseResult, defend
from robusthash.defenses.cgat import CgAT
from robusthash.defenses.codebank import TrainingCodeBank
from robusthash.defenses.pga_at import PgAAT
from robusthash.errors import UserError

_REGISTRY: dict[str, type[AdversarialTraining]] = {cls.name: cls for cls in (CgAT, ATRDH, PgAAT)}


def list_defenses() -> list[str]:
    return sorted(_REGISTRY)


def defense_class(name: str) -> type[AdversarialTraining]:
    if name not in _REGISTRY:
        raise UserError(f"unknown defence {name!r}; valid: {', '.join(list_defenses())}")
    return _REGISTRY[name]


__all__ = [
    "ATRDH",
    "AdversarialTraining",
    "CgAT",
    "DefenseConfig",
    "DefenseResult",
    "PgAAT",
    "TrainingCodeBank",
    "defend",
    "defense_class",
    "list_defenses",
]
