"""Shared pieces of the benchmark scripts: cached models, resumable result rows, printing."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from robusthash.checkpoint import read_checkpoint  # noqa: E402
from robusthash.data import DatasetSplits, load_dataset  # noqa: E402
from robusthash.records import DatasetRef  # noqa: E402
from robusthash.results import SCHEMA, RobustnessRun  # noqa: E402
from robusthash.runtime import atomic_write_json, environment  # noqa: E402
from robusthash.training import TrainConfig, train  # noqa: E402

CACHE = ROOT / "runs" / "bench"
RESULTS = ROOT / "benchmarks" / "results"
EPOCHS = {"fashion-mnist": 20, "fashion-mosaic": 10}

_DATA: dict[str, DatasetSplits] = {}


def dataset(name: str) -> DatasetSplits:
    if name not in _DATA:
        _DATA[name] = load_dataset(name, seed=0)
    return _DATA[name]


def trained_model(
    name: str, bits: int, loss: str = "dph", seed: int = 0, device: str = "cpu", **overrides: Any
) -> Path:
    """Train (or reuse) the embedded recipe for ``loss`` / ``bits`` on dataset ``name`` (on ``device``); return its
    checkpoint.

    fashion-mosaic images are 4x larger, so its recipe runs 10 epochs instead of 20 to stay within minutes.
    """
    backbone = overrides.get("backbone", "small_cnn")
    tag = "" if backbone == "small_cnn" else f"-{backbone}"
    path = CACHE / f"{name}-{loss}{tag}-{bits}-s{seed}.pt"
    config = TrainConfig(loss=loss, bits=bits, seed=seed, **{"epochs": EPOCHS[name], **overrides})
    options = DatasetRef(name).options()
    train(dataset(name), config, path, device=device, dataset_options=options, quiet=True)
    return path


# ProS-GAN at embedded scale: 4 epochs of generator training and 1,500 prototype-net steps (the paper: 100 epochs,
# 30,000 steps), the generator checkpointed next to the attacked model (reused by every benchmark that attacks it).
PROSGAN_RECIPE = {"epochs": 4, "prototype_steps": 1500}


def prosgan_options(checkpoint: Path, bounded: bool = False) -> dict[str, Any]:
    """ProS-GAN's benchmark options for the model of ``checkpoint`` (unbounded, as published, unless ``bounded``)."""
    suffix = "-bounded" if bounded else ""
    return {
        **PROSGAN_RECIPE,
        "bounded": bounded,
        "checkpoint": str(CACHE / f"{checkpoint.stem}-prosgan{suffix}.pt"),
    }


def flat(run: RobustnessRun) -> dict[str, Any]:
    """A robustness run as the flat per-attack numbers the benchmark rows store (means over queries)."""
    return {
        "queries": len(run.query_indices),
        "clean": {"map": run.clean.map},
        "robust_map": run.robust_map,
        "attacks": {
            a.name: {
                "map": a.map,
                "tmap": a.tmap,
                "seconds_per_image": a.seconds_per_image,
                "fit_seconds": a.fit_seconds,
                "bits_flipped": a.mean_bits_flipped,
                "linf": a.mean_linf,
                "l2": a.mean_l2,
                "settings": a.settings,
                "threat_model": a.threat_model,
                "pr_curve": a.scores.pr_curve,
                "p_at_n": a.scores.p_at_n,
            }
            for a in run.attacks
        },
    }


class Rows:
    """Result rows in a typed benchmark document (``kind`` benchmark, named by the script), written atomically
    after every row; rows already there are skipped. Every write first merges the rows other processes wrote
    since (under an exclusive ``flock`` on ``.{name}.rows.lock``), so two runs of one benchmark that measure
    different rows can share its file."""

    def __init__(self, path: Path, command: str, key_fields: tuple[str, ...], device: Any = "cpu") -> None:
        self.path = path
        self.device = device
        self.key_fields = key_fields
        doc = json.loads(path.read_text()) if path.exists() else {}
        self.rows: list[dict[str, Any]] = doc.get("rows", [])
        self.doc = {
            "schema": SCHEMA,
            "kind": "benchmark",
            "benchmark": path.stem,
            "command": command or doc.get("command", ""),  # "": keep the command that wrote the rows
            "config": {},
            "seed": 0,
            "created": "",
            # the environment of the measurements: re-rendering the tables keeps it; a new row replaces it
            "environment": doc.get("environment") or environment(device),
            "rows": self.rows,
            "summary": doc.get("summary"),
            "markdown": doc.get("markdown"),
            "figures": doc.get("figures"),
        }

    @contextlib.contextmanager
    def _merged(self) -> Iterator[None]:
        """Hold the file's lock with ``self.rows`` updated to the rows on disk (another process may have added
        some; a row of the same key on disk wins), then write the document."""
        lock = self.path.parent / f".{self.path.name}.rows.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if self.path.exists():
                self.rows[:] = json.loads(self.path.read_text()).get("rows", [])
            yield
            atomic_write_json(self.doc, self.path)

    def set_markdown(self, markdown: str) -> None:
        """Store the benchmark's own tables with its rows (what ``robusthash report`` shows)."""
        with self._merged():
            self.doc["markdown"] = markdown

    def publish(self, markdown: str, path: str | Path | None) -> None:
        """Write the benchmark's tables to the Markdown file ``path`` (when given) and store them with the rows,
        with the PNG figures they link (relative to ``path``), so that ``robusthash report`` shows those too."""
        if path:
            Path(path).write_text(markdown, encoding="utf-8")
            figures = {}
            for link in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown):
                png = Path(path).parent / link
                if png.is_file():
                    figures[png.name] = base64.b64encode(png.read_bytes()).decode("ascii")
            self.doc["figures"] = figures or None
            self.set_markdown(markdown)

    def key(self, row: dict[str, Any]) -> tuple:
        return tuple(row.get(k) for k in self.key_fields)

    def has(self, **key: Any) -> bool:
        wanted = self.key(key)
        return any(self.key(r) == wanted for r in self.rows)

    def get(self, **key: Any) -> dict[str, Any] | None:
        wanted = self.key(key)
        return next((r for r in self.rows if self.key(r) == wanted), None)

    def add(self, row: dict[str, Any]) -> None:
        with self._merged():
            self.rows[:] = [r for r in self.rows if self.key(r) != self.key(row)] + [row]
            self.doc["environment"] = environment(self.device)


def checkpoint_meta(path: Path) -> dict[str, Any]:
    record = read_checkpoint(path).record
    return {"train": record.train, "model": record.model}
