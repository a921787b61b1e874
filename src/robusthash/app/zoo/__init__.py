"""The model zoo: trained checkpoints of the embedded default, shipped inside the package.

Like RobustBench's ``load_model``, a shipped model loads by name from Python::

    from robusthash.app.zoo import load_model, list_models
    model = load_model("fashion-mnist-dph-32-cgat")          # a HashModel in eval mode

The zoo holds the demo's models (``experiments/demo.toml``): DPH on ``small_cnn``, 32 bits, trained on the
embedded Fashion-MNIST split, and its ATRDH, PgA-AT and CgAT versions; and the defence benchmark's models
(``benchmarks/bench_defenses.py``): DPSH on ``small_cnn`` at 16, 32 and 64 bits on Fashion-MNIST and at 32 bits on
the multi-label fashion-mosaic, undefended and defended by ATRDH, PgA-AT, CgAT and SAAT. Each model has a card
(:mod:`robusthash.cards`), ranked by ``robusthash leaderboard``. Each file is the full checkpoint a run of
that recipe writes, less the optimiser and generator state (so it cannot be trained further, only used), and the
manifest records its SHA-256 and the clean mAP@1000 it was measured at (a test re-measures it). ``robusthash
demo`` and ``robusthash run`` use a shipped checkpoint wherever its recipe (training config, data split and, for a
defence, defence config) equals the stage's exactly, and retrain with ``--from-scratch``. Files are read with
``weights_only=True``. ``scripts/build_zoo.py`` rebuilds the zoo, its manifest and its cards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from robusthash.checkpoint import Checkpoint, read_checkpoint
from robusthash.config import from_mapping
from robusthash.data import DatasetSplits, iterate_batches
from robusthash.defenses import DefenseConfig
from robusthash.errors import UserError
from robusthash.models import HashModel
from robusthash.records import DatasetRef, ModelRecord
from robusthash.runtime import eval_mode, is_main_process
from robusthash.training import TrainConfig

ZOO_DIR = Path(__file__).parent
MANIFEST = ZOO_DIR / "manifest.json"


@dataclass(frozen=True)
class ZooModel:
    """One shipped checkpoint: its name, file, SHA-256 and the clean mAP@``topk`` recorded when it was built."""

    name: str
    file: str
    sha256: str
    clean_map: float
    topk: int
    description: str
    bytes: int | None = None  # the checkpoint's size
    card: str | None = None  # its model card (robusthash benchmark), a file of the zoo
    floats_sha256: str | None = None  # logits_fingerprint where clean_map was measured

    @property
    def path(self) -> Path:
        return ZOO_DIR / self.file

    @property
    def card_path(self) -> Path | None:
        return ZOO_DIR / self.card if self.card else None


@cache
def list_models() -> tuple[ZooModel, ...]:
    """Every model of the zoo (empty when the package ships none)."""
    if not MANIFEST.is_file():
        return ()
    try:
        entries = json.loads(MANIFEST.read_text(encoding="utf-8"))["models"]
        if not isinstance(entries, list):
            raise TypeError("'models' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"the zoo manifest {MANIFEST} is damaged ({type(exc).__name__}: {exc}); reinstall"
        ) from None
    models = tuple(
        from_mapping(ZooModel, entry, f"the zoo manifest {MANIFEST}: an entry") for entry in entries
    )
    for m in models:
        for file, suffix in ((m.file, ".pt"), (m.card or "card.json", ".json")):
            if Path(file).name != file or not file.endswith(suffix):
                raise UserError(
                    f"the zoo manifest {MANIFEST} names a file outside the zoo ({file!r}); reinstall"
                )
    return models


def card_paths() -> list[Path]:
    """The model cards of the zoo (one per model that has one)."""
    return [m.card_path for m in list_models() if m.card_path is not None]


def get(name: str) -> ZooModel:
    """The zoo entry ``name``; an unknown name is a :class:`UserError` listing the valid ones."""
    for entry in list_models():
        if entry.name == name:
            return entry
    raise UserError(
        f"unknown zoo model {name!r}; valid: {', '.join(m.name for m in list_models()) or 'none'}"
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


FINGERPRINT_QUERIES = 64


def logits_fingerprint(model: torch.nn.Module, data: DatasetSplits) -> str:
    """SHA-256 of ``model``'s fp32 logits (eval mode, NCHW, one batch) on the first 64 query images of ``data``.

    A machine that reproduces these bit for bit runs the same float arithmetic as the one that measured a
    manifest's clean mAP, so it must reproduce that mAP exactly; another CPU's kernels round differently, and a
    logit within that rounding of zero flips its bit (a few of the 352,000 a zoo measurement encodes)."""
    images, _, _ = next(iter(iterate_batches(data.query, FINGERPRINT_QUERIES)))
    with torch.no_grad(), eval_mode(model):
        logits = model.preactivation(images.to(next(model.parameters()).device)).float().cpu()
    return hashlib.sha256(logits.contiguous().numpy().tobytes()).hexdigest()


def checkpoint(name: str) -> Checkpoint:
    """The checkpoint of zoo model ``name``, its file checked against the manifest's SHA-256."""
    entry = get(name)
    if not entry.path.is_file() or sha256_of(entry.path) != entry.sha256:
        raise UserError(
            f"the shipped file of zoo model {name} ({entry.path}) is missing or damaged; reinstall"
        )
    return read_checkpoint(entry.path)


def load_model(name: str, device: torch.device | str = "cpu") -> HashModel:
    """Zoo model ``name`` as a :class:`~robusthash.models.HashModel` in eval mode on ``device``."""
    return checkpoint(name).build_model(device)


def find(
    train: TrainConfig, dataset: dict[str, Any], defense: DefenseConfig | None = None
) -> ZooModel | None:
    """The zoo model trained with exactly this recipe (:meth:`~robusthash.records.ModelRecord.recipe`'s kind,
    training config, data split and defence config): ``train`` config, ``dataset`` options (name, data_dir,
    database, split_seed, image_size) and, for a defended model, ``defense`` config; ``None`` if there is none."""
    wanted = ModelRecord(
        "defended" if defense else "trained",
        {},
        asdict(train),
        DatasetRef.of(dataset).options(),
        defense={"config": asdict(defense)} if defense else None,
    ).recipe()
    parts = ("kind", "train", "data", "defense")
    for entry in list_models():
        recipe = _record(entry.name).recipe()
        if all(recipe.get(k) == wanted.get(k) for k in parts):
            return entry
    return None


def is_shipped_copy(path: str | Path) -> bool:
    """Whether ``path`` is a byte-for-byte copy of a zoo file (what :func:`provide` leaves in a run folder)."""
    path = Path(path)
    sizes = {m.path.stat().st_size for m in list_models() if m.path.is_file()}
    if not path.is_file() or path.stat().st_size not in sizes:
        return False
    return sha256_of(path) in {m.sha256 for m in list_models()}


@cache
def _record(name: str) -> ModelRecord:
    return checkpoint(name).record


def provide(
    out: str | Path, train: TrainConfig, dataset: dict[str, Any], defense: DefenseConfig | None = None
) -> ZooModel | None:
    """Copy the zoo model of this recipe to ``out`` (unless ``out`` already exists) and return its entry;
    ``None`` when the zoo has none (the caller trains). A run that then resumes from ``out`` finds it complete.
    In a distributed job rank 0 copies; the caller waits for it (:func:`robusthash.distributed.barrier`)."""
    entry = find(train, dataset, defense)
    if entry is None:
        return None
    out = Path(out)
    if not out.exists() and is_main_process():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.zoo.tmp")
        shutil.copyfile(entry.path, tmp)
        tmp.replace(out)
    return entry


__all__ = [
    "ZooModel",
    "list_models",
    "card_paths",
    "get",
    "checkpoint",
    "load_model",
    "logits_fingerprint",
    "find",
    "provide",
    "is_shipped_copy",
]
