"""Hashing models by name: ``create_model(backbone, bits, ...)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from robusthash.errors import UserError
from robusthash.models.backbones import BACKBONES, build_backbone, register_backbone
from robusthash.models.external import WrappedModel, load_foreign_state_dict, load_model_def, wrap_model
from robusthash.models.hash_model import HashModel


def list_models() -> list[str]:
    return BACKBONES.names()


def create_model(
    name: str,
    bits: int,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | None = None,
    pretrained: str | Path | None = None,
    input_size: int | None = None,
) -> HashModel:
    """Build ``HashModel`` on backbone ``name`` with a ``bits``-bit hash head.

    ``mean``/``std`` (the data's) default to 0/1 per channel; a backbone with ImageNet weights of its own
    (``efficientnet_lite0``) uses the normalisation those weights expect instead. ``image_size`` (the data's)
    decides whether inputs must be upsampled to the backbone's minimum size; ``input_size`` resizes every
    input to that side inside the model (e.g. 32-64 px for the pretrained backbone on a CPU).
    ``pretrained`` is a local state-dict file.
    """
    if not isinstance(bits, int) or bits < 1:
        raise UserError(f"bits must be a positive integer, got {bits!r}")
    if in_channels not in (1, 3):
        raise UserError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
    backbone, dim, backbone_channels, min_size = build_backbone(name, in_channels, pretrained)
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    own = BACKBONES.get(name).normalization
    if own is not None:
        mean, std = (own[0],) * in_channels, (own[1],) * in_channels
    if input_size is not None and input_size < min_size:
        raise UserError(f"input size {input_size} is below {name}'s minimum of {min_size} pixels")
    if input_size is None and image_size is not None and image_size < min_size:
        input_size = min_size
    config = {
        "backbone": name,
        "bits": bits,
        "in_channels": in_channels,
        "mean": list(mean),
        "std": list(std),
        "image_size": image_size,
        "input_size": input_size,
        "pretrained": str(pretrained) if pretrained else None,
    }
    return HashModel(backbone, dim, bits, in_channels, backbone_channels, mean, std, input_size, config)


def model_from_config(config: dict) -> HashModel:
    """Rebuild an (untrained) model from ``HashModel.config``; load the state dict afterwards."""
    return create_model(
        config["backbone"],
        config["bits"],
        config["in_channels"],
        config["mean"],
        config["std"],
        config.get("image_size"),
        input_size=config.get("input_size"),
    )


__all__ = [
    "BACKBONES",
    "HashModel",
    "WrappedModel",
    "create_model",
    "list_models",
    "load_foreign_state_dict",
    "load_model_def",
    "model_from_config",
    "register_backbone",
    "wrap_model",
]
