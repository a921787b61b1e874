"""``small_cnn``: written for the embedded 28x28 / 56x56 data."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robusthash.models.backbones import BackboneSpec, Built, load_local, register_backbone


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


def _small_cnn(in_channels: int, pretrained: str | Path | None) -> Built:
    net = SmallCNN(in_channels)
    load_local(net, pretrained)
    return net, net.feature_dim, in_channels, 8


register_backbone(
    BackboneSpec("small_cnn", _small_cnn, "4 conv blocks, ~0.18M parameters, for 28-56 px data")
)
