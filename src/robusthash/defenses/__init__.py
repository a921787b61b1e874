"""Defences by name: ``defense_class(name)``, ``list_defenses()`` and :func:`defend`.

Each defence is one module of this package registered with ``@register_defense``; all are imported here.
"""

from __future__ import annotations

from robusthash.defenses.base import (
    DEFENSES,
    AdversarialTraining,
    DefenseConfig,
    DefenseResult,
    defend,
    model_fingerprint,
    register_defense,
)
from robusthash.defenses.codebank import TrainingCodeBank
from robusthash.registry import import_submodules

import_submodules(__name__, __path__, skip=lambda name: name in ("base", "codebank"))

from robusthash.defenses.atrdh import ATRDH  # noqa: E402
from robusthash.defenses.cgat import CgAT  # noqa: E402
from robusthash.defenses.pga_at import PgAAT  # noqa: E402
from robusthash.defenses.saat import SAAT  # noqa: E402


def list_defenses() -> list[str]:
    return DEFENSES.names()


def defense_class(name: str) -> type[AdversarialTraining]:
    return DEFENSES.get(name)


__all__ = [
    "ATRDH",
    "DEFENSES",
    "AdversarialTraining",
    "CgAT",
    "DefenseConfig",
    "DefenseResult",
    "PgAAT",
    "SAAT",
    "TrainingCodeBank",
    "defend",
    "defense_class",
    "list_defenses",
    "model_fingerprint",
    "register_defense",
]
