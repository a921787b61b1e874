"""Feature extractors by name, one module per backbone family, each registering itself with
``register_backbone(BackboneSpec(...))``. A spec's builder returns ``(module, feature_dim, in_channels,
min_input_size)``.

``small_cnn`` is written here for the embedded 28x28 / 56x56 data; ``alexnet``, ``vgg11``, ``resnet*`` and
``densenet161`` are torchvision's own architectures with the classification layer removed, randomly
initialised unless ``pretrained=PATH`` names a torchvision state-dict file you have locally;
``efficientnet_lite0`` (extra ``pretrained``) always starts from its ImageNet weights, which a registry package
ships. Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from robusthash.errors import UserError
from robusthash.registry import Registry, import_submodules
from robusthash.runtime import safe_load

Built = tuple[nn.Module, int, int, int]


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: ``build(in_channels, pretrained) -> (module, feature_dim, channels, min_size)``,
    and the input normalisation its own weights expect (``None``: the data's)."""

    name: str
    build: Callable[[int, str | Path | None], Built]
    description: str
    normalization: tuple[float, float] | None = None


BACKBONES: Registry[BackboneSpec] = Registry("backbone")
register_backbone = BACKBONES.register


def load_local(model: nn.Module, pretrained: str | Path | None) -> None:
    if pretrained is None:
        return
    path = Path(pretrained)
    state = safe_load(path, "pretrained state dict (a local file: nothing is downloaded)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise UserError(f"pretrained weights {path} do not fit this backbone: missing {missing[:3]}...")
    del unexpected


def build_backbone(name: str, in_channels: int, pretrained: str | Path | None = None) -> Built:
    return BACKBONES.get(name).build(in_channels, pretrained)


import_submodules(__name__, __path__)

from robusthash.models.backbones.efficientnet import efficientnet_lite0  # noqa: E402
from robusthash.models.backbones.small_cnn import SmallCNN  # noqa: E402

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Built",
    "SmallCNN",
    "build_backbone",
    "efficientnet_lite0",
    "load_local",
    "register_backbone",
]
