"""The layering of ``src/robusthash``: data -> model -> codes -> attack -> scores -> report -> CLI, one direction.

Every import (top-level or inside a function) of one robusthash package from another must go to a lower layer;
packages of one layer do not import each other; nothing imports the CLI.
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
    {"defenses"},
    {"zoo"},
    {"results"},
    {"masking"},
    {"robustness"},
    {"report"},
    {"experiment"},
    {"cli"},
    {"__main__", "__init__"},  # the package's façade re-exports every layer (lazily)
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _component(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robusthash"):
            parts = node.module.split(".")
            if len(parts) == 1:  # from robusthash import x
                found += [alias.name for alias in node.names]
            else:
                found.append(parts[1])
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1] for a in node.names if a.name.startswith("robusthash.")]
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
                bad.append(f"{path.relative_to(SRC)} imports {target} (layer {LAYER[target]} >= {LAYER[here]})")
    assert not bad, "\n".join(bad)
