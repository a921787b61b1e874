"""torchvision's DenseNet-161 with the classifier removed."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robusthash.models.backbones import BackboneSpec, Built, load_local, register_backbone


def _densenet161(pretrained: str | Path | None) -> Built:
    from torchvision.models import densenet161

    net = densenet161(weights=None)
    load_local(net, pretrained)
    body = nn.Sequential(net.features, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return body, net.classifier.in_features, 3, 32


register_backbone(BackboneSpec("densenet161", lambda c, p: _densenet161(p), "torchvision DenseNet-161"))
