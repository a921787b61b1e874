"""torchvision's AlexNet and VGG11 without their last layer: the 4,096 fc7 features."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robusthash.models.backbones import BackboneSpec, Built, load_local, register_backbone


def _fc7_trunk(name: str, min_size: int) -> BackboneSpec:
    def build(in_channels: int, pretrained: str | Path | None) -> Built:
        import torchvision.models as tvm

        net = getattr(tvm, name)(weights=None)
        load_local(net, pretrained)
        body = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *list(net.classifier.children())[:-1])
        return body, 4096, 3, min_size

    return BackboneSpec(name, build, f"torchvision {name} (fc7 features)")


register_backbone(_fc7_trunk("alexnet", 63))
register_backbone(_fc7_trunk("vgg11", 32))
