"""Configuration in one place: dataclass fields carry their help text, the command line is derived from them,
and ``validate()`` on each config is the only place values are checked.

``option(default, help)`` declares a field; :func:`add_arguments` adds one ``--flag`` per field of a config
class to an ``argparse`` parser (the default shown is the field's own); :func:`from_arguments` builds the
config back from the parsed namespace. Experiment files (``robusthash run``) build the same classes with
:func:`from_mapping`, which names unknown keys and checks every value against its field's type (pydantic's
strict mode: ``"4"`` is not an integer, ``2.5`` is not an integer, ``"yes"`` is not a boolean, ``"pga"`` is not a
list) before ``validate()`` checks ranges.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from robusthash.errors import UserError

C = TypeVar("C")


RECORDED: dict[str, type] = {}  # part of a model record -> the config class it stores (see ``recorded_as``)


def recorded_as(part: str) -> Callable[[type[C]], type[C]]:
    """Register a config class as what a model record stores under ``part`` (``train``, ``defense``), so that
    :func:`restore` can read a stored one back (see :meth:`robusthash.records.ModelRecord.recipe`)."""

    def register(cls: type[C]) -> type[C]:
        if RECORDED.setdefault(part, cls) is not cls:
            raise ValueError(f"{part!r} is already recorded as {RECORDED[part].__name__}")
        return cls

    return register


def restore(part: str, stored: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A config a record stored under ``part``, rebuilt with its class so that fields added to the class since
    then read at their defaults (every later field defaults to the earlier behaviour); ``None`` when the stored
    config has fields this version lacks. A class with a ``canonical(stored)`` classmethod gives the form itself
    (a config whose parts moved since, such as a defence's own options)."""
    cls = RECORDED[part]
    try:
        if hasattr(cls, "canonical"):
            return cls.canonical(stored or {})
        return dataclasses.asdict(cls(**(stored or {})))
    except (TypeError, UserError):
        return None


def option(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 - argparse's word
    """A config field with a default and its help text."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def check_finite(**values: float | None) -> None:
    """Raise :class:`UserError` naming the first value that is NaN or infinite."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the non-None type of a field, whether it may be None)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"Any": Any, "dict": dict, "list": list})  # noqa: S307 - our own annotations
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return annotation, False


def _parser_for(kind: Any, name: str, scale: float = 1.0) -> Any:
    origin = typing.get_origin(kind) or kind
    if origin is bool:
        return None
    if origin is list:
        return lambda text: [part.strip() for part in text.split(",") if part.strip()]
    if origin is dict:

        def parse_json(text: str) -> Any:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise argparse.ArgumentTypeError(f"--{name} takes JSON, got {text!r}") from None
            if not isinstance(value, origin):
                raise argparse.ArgumentTypeError(f"--{name} takes a JSON {origin.__name__}, got {text!r}")
            return value

        return parse_json
    if origin is int:

        def parse_int(text: str) -> int | None:
            if text.lower() in ("none", "all"):
                return None
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None

        return parse_int
    if origin is float:

        def parse_float(text: str) -> float:
            try:
                return float(text) / scale
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None

        return parse_float
    return str


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One ``--flag`` per field of dataclass ``cls`` (underscores become dashes), help from the field.

    Every flag defaults to ``None`` on the parser, meaning "the config's own default" (so a value stored in a
    checkpoint can take precedence); the help shows the real default. Booleans get ``--flag`` / ``--no-flag``;
    lists are comma-separated; dicts are JSON; integers accept ``none``; a field with ``cli_scale`` metadata is
    given on the command line in those units (eps in pixel levels: ``cli_scale=255``).
    """
    skip = set(skip)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        kind, _ = _base_type(hints[f.name])
        default = (defaults or {}).get(f.name, f.default)
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        scale = f.metadata.get("cli_scale", 1.0)
        if isinstance(default, float) and scale != 1.0:
            default = round(default * scale, 6)
        shown = json.dumps(default) if isinstance(default, (dict, list)) else default
        help_text = f"{help_text} (default: {shown})" if default is not None else help_text
        if kind is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                type=_parser_for(kind, f.name, scale),
                default=None,
                metavar=f.name.upper(),
                help=help_text,
            )


def given(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that the command line set (not ``None``)."""
    return {
        f.name: getattr(namespace, f.name)
        for f in dataclasses.fields(cls)
        if getattr(namespace, f.name, None) is not None
    }


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint, config=ConfigDict(strict=True))


def _kind(hint: Any) -> str:
    """A field type in a user's words: ``an integer``, ``a list of strings``, ``a number or nothing``."""
    base, optional = _base_type(hint)
    origin = typing.get_origin(base) or base
    words = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list of strings",
        dict: "a table",
    }.get(origin, str(base))
    return f"{words} (or left out)" if optional else words


def typed_values(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` checked against the field types of dataclass ``cls`` (strict: no string-to-number or
    number-to-string coercion; an integer is a number); :class:`UserError` names the table, key and type."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    typed = {}
    for key, value in values.items():
        try:
            typed[key] = _adapter(hints[key]).validate_python(value)
        except ValidationError as exc:
            inner = "".join(f"[{p!r}]" for p in exc.errors()[0]["loc"])
            raise UserError(f"{where} {key}{inner}: expected {_kind(hints[key])}, got {value!r}") from None
    return typed


def from_mapping(cls: type[C], values: Mapping[str, Any], where: str) -> C:
    """Build config ``cls`` from a mapping (an experiment file's table), every value typed (:func:`typed_values`)."""
    if not isinstance(values, Mapping):
        raise UserError(f"{where} must be a table of settings, got {values!r}")
    try:
        return cls(**typed_values(cls, values, where))  # type: ignore[arg-type]
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from None
