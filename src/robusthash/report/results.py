"""Results documents: every figure travels with the config, seed, versions and device that produced it."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from robusthash.runtime import atomic_write_json, environment

SCHEMA = "robusthash-results/1"


def results_document(
    command: str,
    config: dict[str, Any],
    seed: int,
    device: torch.device | str,
    model_meta: dict[str, Any] | None,
    results: dict[str, Any],
) -> dict[str, Any]:
    model = None
    if model_meta is not None:
        model = {k: model_meta.get(k) for k in ("kind", "model", "train", "dataset", "defense", "seed")}
    return {
        "schema": SCHEMA,
        "command": command,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "seed": seed,
        "environment": environment(device),
        "model": model,
        "results": results,
    }


def write_results(doc: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(doc, path)
