"""torchvision's AlexNet without its last layer (fc7 features)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robusthash.models.backbones import BackboneSpec, Built, load_local, register_backbone


def _alexnet(pretrained: str | Path | None) -> Built:
    from torchvision.models import alexnet

    net = alexnet(weights=None)
    load_local(net, pretrained)
    body = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *list(net.classifier.children())[:-1])
    return body, 4096, 3, 63




register_backbone(BackboneSpec("alexnet", lambda c, p: _alexnet(p), "torchvision AlexNet (fc7 features)"))
