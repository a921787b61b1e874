"""torchvision's VGG11 without its last layer (fc7 features)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robusthash.models.backbones import BackboneSpec, Built, load_local, register_backbone


def _vgg11(pretrained: str | Path | None) -> Built:
    from torchvision.models import vgg11

    net = vgg11(weights=None)
    load_local(net, pretrained)
    body = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *list(net.classifier.children())[:-1])
    return body, 4096, 3, 32




register_backbone(BackboneSpec("vgg11", lambda c, p: _vgg11(p), "torchvision VGG11 (fc7 features)"))
