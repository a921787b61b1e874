"""Load any model a user brings, with the data it was trained on: a robusthash checkpoint, a state dict of the
user's own module (``file.py:factory``, wrapped by :func:`~robusthash.models.wrap_model`), or a state dict of a
public backbone the field's code uses (``backbone`` + ``bits``).

The data is the split the checkpoint recorded, with any field a caller gives replacing the stored one; a brought
model gets a record of its own (its training loss from :attr:`ModelSource.loss`), so that every model is scored
and reported through the same :class:`~robusthash.checkpoint.Checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robusthash.checkpoint import FORMAT, Checkpoint, check_matches_data, read_checkpoint
from robusthash.data import DatasetSplits
from robusthash.errors import UserError
from robusthash.models import HashModel, create_model, load_foreign_state_dict, load_model_def, wrap_model
from robusthash.records import DatasetRef, ModelRecord
from robusthash.runtime import safe_load
from robusthash.training import TrainConfig, dataset_meta


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a checkpoint or state-dict ``path``; for a state dict, ``model_def``
    (``file.py:factory``, whose module returns ``output``: ``tanh`` or ``preactivation``) or ``backbone`` with
    ``bits``; ``loss`` names the training loss of a brought model (its codes' similarity, used by some attacks)."""

    path: Path
    model_def: str | None = None
    backbone: str | None = None
    bits: int | None = None
    output: str = "tanh"
    loss: str = "dph"

    @property
    def brought(self) -> bool:
        """A state dict of the user's own (not a robusthash checkpoint)."""
        return self.model_def is not None or self.backbone is not None


@dataclass
class LoadedModel:
    """A model in eval mode on its device, its checkpoint (or the record a brought model gets), and its data."""

    model: HashModel
    checkpoint: Checkpoint
    data: DatasetSplits
    dataset: DatasetRef


def load_with_data(
    source: ModelSource, device: torch.device | str = "cpu", dataset: dict[str, object] | None = None
) -> LoadedModel:
    """The model of ``source`` and its data: the split the checkpoint recorded, each non-``None`` field of
    ``dataset`` (a :class:`DatasetRef`'s fields) replacing the stored one. A checkpoint whose classes, channels
    or image shape do not fit the data is a :class:`UserError`."""
    if not source.brought:
        try:
            ckpt = read_checkpoint(source.path)
        except UserError as exc:
            if "is not a robusthash checkpoint" not in str(exc):
                raise
            raise UserError(
                f"{exc}; for a state dict of your own module pass --model-def path/to/file.py:factory, "
                "or --backbone NAME --bits K for one of the field's public code"
            ) from None
        ref = ckpt.record.data_ref.with_given(**(dataset or {}))
        data = ref.load()
        check_matches_data(ckpt.record, data, source.path)
        return LoadedModel(ckpt.build_model(device), ckpt, data, ref)
    state = safe_load(source.path, "checkpoint or state dict")
    stored = (
        ModelRecord.from_meta(state.get("meta"), str(source.path)) if state.get("format") == FORMAT else None
    )
    weights = state["model"] if stored else state
    ref = (stored.data_ref if stored else DatasetRef()).with_given(**(dataset or {}))
    data = ref.load()
    model = _brought_model(source, weights, data)
    recipe = {**TrainConfig().__dict__, "loss": source.loss, "backbone": model.config["backbone"]}
    record = stored or ModelRecord("trained", model.config, recipe, dataset_meta(data, ref.options()))
    return LoadedModel(
        model.to(device).eval(), Checkpoint(source.path, record, {"model": model.state_dict()}), data, ref
    )


def _brought_model(source: ModelSource, weights: dict, data: DatasetSplits) -> HashModel:
    if source.model_def is not None:
        model = wrap_model(
            load_model_def(source.model_def),
            source.output,
            image_shape=data.image_shape,
            name=source.model_def,
        )
        if "mean" not in weights:  # the bare state dict of the user's module
            weights = {**model.state_dict(), **{f"module.{k}": v for k, v in weights.items()}}
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            raise UserError(
                f"{source.path} does not fit the module of {source.model_def}: {str(exc).splitlines()[0]}"
            ) from None
        return model
    if source.bits is None:
        raise UserError("--backbone needs --bits, the code length of the state dict")
    model = create_model(
        source.backbone, source.bits, data.image_shape[0], data.mean, data.std, data.image_shape[-1]
    )
    load_foreign_state_dict(model, weights, source.backbone)
    return model
