"""Checkpoints: everything needed to rebuild a model, written atomically and read with ``weights_only=True``.

A checkpoint is a plain dict of tensors and JSON-like values:

``format``, ``meta`` (model config, training config, dataset description, seed, versions, history),
``model`` (state dict), and for resumable runs ``loss``, ``optimizer``, ``scheduler``, ``rng`` and ``epoch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robusthash.data import DatasetSplits
from robusthash.errors import UserError
from robusthash.models import HashModel, model_from_config
from robusthash.records import ModelRecord
from robusthash.runtime import atomic_torch_save, safe_load

FORMAT = "robusthash-checkpoint/1"


@dataclass
class Checkpoint:
    path: Path
    record: ModelRecord
    state: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        """The stored form of :attr:`record` (what :func:`save_checkpoint` writes)."""
        return self.record.to_meta()

    def build_model(self, device: torch.device | str = "cpu") -> HashModel:
        """The trained model in eval mode on ``device``."""
        if self.record.external:
            raise UserError(
                f"{self.path} holds a model you brought ({self.record.backbone}); pass "
                "--model-def path/to/file.py:factory to rebuild it"
            )
        model = model_from_config(self.record.model)
        try:
            model.load_state_dict(self.state["model"])
        except RuntimeError as exc:
            raise UserError(f"checkpoint {self.path} does not match its own model config: {exc}") from exc
        return model.to(device).eval()

    def summary(self) -> dict[str, Any]:
        """What results files record of the model: kind, model, train, dataset, defense and seed."""
        return self.record.summary()


def save_checkpoint(path: str | Path, meta: dict[str, Any], model: HashModel, **state: Any) -> None:
    """Write ``meta``, the model's weights and any resumable ``state`` atomically to ``path``."""
    payload = {"format": FORMAT, "meta": meta, "model": model.state_dict(), **state}
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a checkpoint; a missing, corrupt or foreign file raises :class:`UserError`."""
    path = Path(path)
    payload = safe_load(path, "robusthash checkpoint", map_location, kind=None)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(fmt, str) and fmt.startswith("robusthash-checkpoint/") and fmt != FORMAT:
        raise UserError(
            f"{path} was written by another robusthash version (format {fmt}); this version reads {FORMAT}"
        )
    if fmt != FORMAT:
        raise UserError(f"{path} is not a robusthash checkpoint (expected format {FORMAT})")
    if "model" not in payload:
        raise UserError(f"{path} is a damaged robusthash checkpoint (missing model)")
    return Checkpoint(path, ModelRecord.from_meta(payload.get("meta"), str(path)), payload)


def check_matches_data(record: ModelRecord, data: DatasetSplits, path: str | Path = "checkpoint") -> None:
    """Raise :class:`UserError` when a checkpoint's model cannot be used on ``data``."""
    name = record.data_ref.name
    if record.num_classes not in (None, data.num_classes):
        raise UserError(
            f"{path} was trained on {name} with {record.num_classes} classes, but {data.name} has "
            f"{data.num_classes}"
        )
    if record.in_channels != data.image_shape[0]:
        raise UserError(
            f"{path} expects {record.in_channels}-channel images, but {data.name} has {data.image_shape[0]}"
        )
    shape = record.image_shape
    if shape is not None and list(shape) != list(data.image_shape):
        raise UserError(
            f"{path} was trained on {name} images of shape {tuple(shape)}, "
            f"but {data.name} has {tuple(data.image_shape)}; pass --image-size {shape[-1]} or retrain"
        )
