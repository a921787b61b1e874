"""Hashing losses by name: ``create_loss(name, bits, num_classes, num_train, **options)``, ``list_losses()``."""

from __future__ import annotations

from typing import Any

from robusthash.errors import UserError
from robusthash.losses.base import HashLoss
from robusthash.losses.csq import CSQLoss
from robusthash.losses.dch import DCHLoss
from robusthash.losses.dph import DPHLoss
from robusthash.losses.dpsh import DPSHLoss
from robusthash.losses.dsdh import DSDHCLoss, DSDHLoss
from robusthash.losses.hashnet import HashNetLoss

_REGISTRY: dict[str, type[HashLoss]] = {
    cls.name: cls for cls in (DPSHLoss, DPHLoss, CSQLoss, HashNetLoss, DSDHLoss, DSDHCLoss, DCHLoss)
}


def register_loss(cls: type[HashLoss]) -> type[HashLoss]:
    _REGISTRY[cls.name] = cls
    return cls


def list_losses() -> list[str]:
    return sorted(_REGISTRY)


def create_loss(name: str, bits: int, num_classes: int, num_train: int, **options: Any) -> HashLoss:
    if name not in _REGISTRY:
        raise UserError(f"unknown loss {name!r}; valid: {', '.join(list_losses())}")
    try:
        return _REGISTRY[name](bits, num_classes, num_train, **options)
    except TypeError as exc:
        raise UserError(f"bad option for loss {name!r}: {exc}") from exc


__all__ = ["HashLoss", "create_loss", "list_losses", "register_loss"]
