"""One registry helper for every kind of named component: attacks, defences, losses, datasets, backbones.

A component registers itself where it is defined::

    ATTACKS = Registry("attack")

    @ATTACKS.register
    class PgA(IterativeAttack):
        name = "pga"

``ATTACKS.get("pga")`` returns it; an unknown name raises :class:`UserError` listing the valid ones. A package
whose components live one per file calls :func:`import_submodules` in its ``__init__`` so that adding a
component touches only its own file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from robusthash.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named components of one kind, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, item: T | None = None, *, name: str | None = None) -> Any:
        """Register ``item`` under ``name`` (default: its ``name`` attribute); usable as a decorator. A name
        already taken by another component is an error (:meth:`unregister` it first to replace it)."""

        def add(obj: T) -> T:
            key = name or getattr(obj, "name", None)
            if not key or not isinstance(key, str):
                raise ValueError(f"a registered {self.kind} needs a non-empty string name, got {key!r}")
            taken = self._items.get(key)
            if taken is not None and taken is not obj:
                raise ValueError(
                    f"{self.kind} name {key!r} is already registered by {_qualname(taken)}; "
                    f"choose another name for {_qualname(obj)} or unregister the first"
                )
            self._items[key] = obj
            return obj

        return add if item is None else add(item)

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def import_submodules(package: str, path: list[str], skip: Callable[[str], bool] = lambda _: False) -> None:
    """Import every module of a package (so their ``@register`` decorators run)."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_") and not skip(info.name):
            importlib.import_module(f"{package}.{info.name}")
