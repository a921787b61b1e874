"""torchvision's ResNets with the classifier removed (pooled features)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from robusthash.models.backbones import BackboneSpec, Built, load_local, register_backbone


def _resnet(name: str) -> Callable[[str | Path | None], Built]:
    def build(pretrained: str | Path | None) -> Built:
        import torchvision.models as tvm

        net = getattr(tvm, name)(weights=None)
        load_local(net, pretrained)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim, 3, 32

    return build


for _depth in (18, 34, 50, 101):
    register_backbone(
        BackboneSpec(
            f"resnet{_depth}",
            lambda c, p, _n=f"resnet{_depth}": _resnet(_n)(p),
            f"torchvision ResNet-{_depth} (pooled features)",
        )
    )
