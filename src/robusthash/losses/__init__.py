"""Hashing losses by name: ``create_loss(name, bits, num_classes, num_train, **options)``, ``list_losses()``.

Each loss is one module of this package registered with ``@register_loss``; all of them are imported here.
"""

from __future__ import annotations

from typing import Any

from robusthash.errors import UserError
from robusthash.losses.base import LOSSES, HashLoss, register_loss
from robusthash.registry import import_submodules

import_submodules(__name__, __path__, skip=lambda name: name == "base")


def list_losses() -> list[str]:
    return LOSSES.names()


def create_loss(name: str, bits: int, num_classes: int, num_train: int, **options: Any) -> HashLoss:
    cls = LOSSES.get(name)
    try:
        return cls(bits, num_classes, num_train, **options)
    except TypeError as exc:
        raise UserError(f"bad option for loss {name!r}: {exc}") from exc


__all__ = ["LOSSES", "HashLoss", "create_loss", "list_losses", "register_loss"]
