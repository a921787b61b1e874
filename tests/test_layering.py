"""The layering of ``src/robusthash``: data -> model -> codes -> attack -> scores -> report -> CLI, one direction.

Every import (top-level or inside a function) of one robusthash package from another must go to a lower layer;
packages of one layer do not import each other; nothing imports the CLI. The application (``robusthash/app``: zoo,
report, experiment runner, CLI) sits over the core library, which never imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "robusthash"
LAYERS = [
    {"errors"},
    {"registry", "config", "runtime"},
    {"distributed"},
    {"codes", "metrics"},
    {"data"},
    {"records"},
    {"models"},
    {"losses", "checkpoint"},
    {"oracle"},
    {"attacks"},
    {"evaluation"},
    {"store"},
    {"training"},
    {"loading"},
    {"defenses"},
    {"results"},
    {"masking"},
    {"robustness"},
    {"certify"},
    {"cards"},
    # the application layer (robusthash/app): nothing in the core above imports it
    {"app"},
    {"app.zoo"},
    {"app.report"},
    {"app.experiment"},
    {"app.cli"},
    {"__main__", "__init__"},  # the package's façade re-exports every layer (lazily)
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _component(path: Path) -> str:
    """``attacks`` for attacks/pga.py; ``app.cli`` for app/cli.py (the application's parts are layers too)."""
    parts = [p.removesuffix(".py") for p in path.relative_to(SRC).parts]
    if parts[0] == "app" and len(parts) > 1 and parts[1] != "__init__":
        return f"app.{parts[1]}"
    return parts[0]


def _name(module: list[str]) -> str:
    """The component of ``robusthash.<module...>``."""
    return f"app.{module[1]}" if module[0] == "app" and len(module) > 1 else module[0]


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robusthash"):
            parts = node.module.split(".")[1:]
            if parts in ([], ["app"]):  # from robusthash import x; from robusthash.app import x
                found += [_name([*parts, alias.name]) for alias in node.names]
            else:
                found.append(_name(parts))
        elif isinstance(node, ast.Import):
            found += [_name(a.name.split(".")[1:]) for a in node.names if a.name.startswith("robusthash.")]
    return found


def test_every_module_has_a_layer():
    components = {_component(p) for p in SRC.rglob("*.py")}
    assert components <= set(LAYER), sorted(components - set(LAYER))


def test_imports_only_go_down_and_never_in_a_circle():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        here = _component(path)
        for target in _imports(path):
            if target == here or target not in LAYER:
                continue
            if LAYER[target] >= LAYER[here]:
                bad.append(
                    f"{path.relative_to(SRC)} imports {target} (layer {LAYER[target]} >= {LAYER[here]})"
                )
    assert not bad, "\n".join(bad)


def test_the_core_never_imports_the_application():
    bad = [
        f"{p.relative_to(SRC)} imports {t}"
        for p in sorted(SRC.rglob("*.py"))
        if not _component(p).startswith("app") and _component(p) not in ("__init__", "__main__")
        for t in _imports(p)
        if t.startswith("app")
    ]
    assert not bad, "\n".join(bad)
