"""ProS-GAN's networks (Wang et al., Prototype-supervised adversarial network for targeted attack of deep hashing,
CVPR 2021): the label-conditioned generator and the spectral-norm PatchGAN discriminator, in two layouts.

``layout="official"``: the official code's layers (``model/module.py`` of the ProS-GAN repository) under its
parameter names, so that a generator it saved loads as it is (:func:`~robusthash.models.load_foreign_state_dict`
with backbone ``"prosgan-generator"``): a 14 x 14 x 128 label map (``Linear(512, 128 14 14)``) up through
bias-free transposed convolutions halving the width (128 -> 8), the label map *before* the image at the input,
bias-free residual blocks, transposed convolutions and final convolution; the discriminator's last
convolution without spectral norm and without bias. At 224 px it is the official network exactly (21.5M
generator parameters); at other sizes the label map starts at ``size / 2^u`` with ``u`` the halvings that keep
the side even and at least 14.

``layout="compact"`` (robusthash's, the embedded benchmarks'): every convolution with a bias, the image before
the label map, and sizes by this rule:

- Generator: the label encoder starts at ``s x s`` with ``s = size / 2^u``, ``u`` the number of halvings that keep
  the side even and at least 7 (224 -> 7 with u = 5, 56 -> 7 with u = 3, 28 -> 7 with u = 2, 32 -> 8 with u = 2),
  then ``u`` transposed convolutions up to the image size. The image path always downsamples twice (as the
  official code), so sides divisible by 4 come back exactly; any other side is resized back at the end.
- Discriminator: as many stride-2 convolutions (at most the official 5) as keep the side at least 3, then one
  convolution over the whole remaining map to ``C + 1`` outputs (C class scores, one real/fake score).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm


def _up_stages(size: int) -> int:
    stages = 0
    while size % 2 == 0 and size // 2 >= 7:
        size //= 2
        stages += 1
    return stages


def _down_stages(size: int, most: int = 5) -> int:
    stages = 0
    while stages < most and size // 2 >= 3:
        size //= 2
        stages += 1
    return stages


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LabelEncoder(nn.Module):
    """The prototype feature (512) to a label map of the image's size: ``Linear(512, 128 s s)``, then transposed
    convolutions with instance norm and ReLU, then a 3x3 convolution to the image's channels."""

    def __init__(self, channels: int, size: int, feature_dim: int = 512) -> None:
        super().__init__()
        stages = _up_stages(size)
        self.start = size // 2**stages
        self.project = nn.Linear(feature_dim, 128 * self.start * self.start)
        layers: list[nn.Module] = []
        width = 128
        for _ in range(stages):
            out = max(width // 2, 32)
            layers += _block(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1), out)
            width = out
        self.up = nn.Sequential(*layers, nn.Conv2d(width, channels, 3, padding=1))
        self.size = size

    def forward(self, feature: Tensor) -> Tensor:
        x = F.relu(self.project(feature)).view(-1, 128, self.start, self.start)
        x = self.up(x)
        return (
            x if x.shape[-1] == self.size else F.interpolate(x, size=(self.size, self.size), mode="bilinear")
        )


class ProSGANGenerator(nn.Module):
    """``G(x, feature) -> x'``: the whole adversarial image in [0, 1] (computed as ``(tanh(.) + 1) / 2`` of a
    network that sees the image scaled to [-1, 1] and the label map; no perturbation bound of its own).

    Encoder conv7 (64), two stride-2 convs (128, 256), 3 + 3 residual blocks at 256 channels (the label map is
    concatenated with the image at the input; the second group refines after the first), decoder of two
    transposed convs (128, 64), the image concatenated again, conv3 + tanh.
    """

    def __init__(self, channels: int, size: int, feature_dim: int = 512) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        self.label_encoder = LabelEncoder(channels, size, feature_dim)
        self.encoder = nn.Sequential(
            *_block(nn.Conv2d(2 * channels, 64, 7, padding=3), 64),
            *_block(nn.Conv2d(64, 128, 4, stride=2, padding=1), 128),
            *_block(nn.Conv2d(128, 256, 4, stride=2, padding=1), 256),
        )
        self.residual = nn.Sequential(*[ResidualBlock(256) for _ in range(6)])
        self.decoder = nn.Sequential(
            *_block(nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1), 128),
            *_block(nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), 64),
        )
        self.out = nn.Conv2d(64 + channels, channels, 3, padding=1)

    def forward(self, x: Tensor, feature: Tensor) -> Tensor:
        scaled = x * 2 - 1
        h = self.encoder(torch.cat([scaled, self.label_encoder(feature)], 1))
        h = self.decoder(self.residual(h))
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, size=x.shape[-2:], mode="bilinear")
        return (torch.tanh(self.out(torch.cat([h, scaled], 1))) + 1) / 2


class ProSGANDiscriminator(nn.Module):
    """Spectral-norm PatchGAN: stride-2 4x4 convolutions (64, 128, ... up to 1024) with LeakyReLU(0.01), then one
    convolution over the remaining map to ``num_classes + 1`` outputs, returned as (N, C + 1)."""

    def __init__(self, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, side = channels, size
        for i in range(_down_stages(size)):
            out = 64 * 2**i
            layers += [
                spectral_norm(nn.Conv2d(width, out, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.01, inplace=True),
            ]
            width, side = out, side // 2
        self.body = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Conv2d(width, num_classes + 1, side))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x * 2 - 1)).flatten(1)


# ----------------------------------------------------------------------------- the official layout
LAYOUTS = ("compact", "official")


def _official_up_stages(size: int) -> int:
    stages = 0
    while size % 2 == 0 and size // 2 >= 14:
        size //= 2
        stages += 1
    return stages


class OfficialResidualBlock(nn.Module):
    """The official ``ResidualBlock(net_mode='t')``: two bias-free 3x3 convolutions, instance norm without affine."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.main(x)


class OfficialLabelEncoder(nn.Module):
    """The official ``LabelEncoder``: ``fc`` = Linear(512, 128 s s) + ReLU, ``transform`` = bias-free transposed
    convolutions (width halving) with instance norm and ReLU, then a bias-free 3x3 convolution."""

    def __init__(self, channels: int, size: int, feature_dim: int = 512, width: int = 128) -> None:
        super().__init__()
        stages = _official_up_stages(size)
        self.width, self.start, self.size = width, size // 2**stages, size
        self.fc = nn.Sequential(nn.Linear(feature_dim, width * self.start * self.start), nn.ReLU(True))
        layers: list[nn.Module] = []
        for _ in range(stages):
            layers += _block(
                nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False), width // 2
            )
            width //= 2
        self.transform = nn.Sequential(*layers, nn.Conv2d(width, channels, 3, padding=1, bias=False))

    def forward(self, feature: Tensor) -> Tensor:
        x = self.transform(self.fc(feature).view(-1, self.width, self.start, self.start))
        return (
            x if x.shape[-1] == self.size else F.interpolate(x, size=(self.size, self.size), mode="bilinear")
        )


class OfficialProSGANGenerator(nn.Module):
    """``G(x, feature) -> x'`` in the official layout (module docstring); the same interface as
    :class:`ProSGANGenerator` (images in [0, 1], the network itself on [-1, 1])."""

    def __init__(self, channels: int, size: int, feature_dim: int = 512) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        self.label_encoder = OfficialLabelEncoder(channels, size, feature_dim)
        self.image_encoder = nn.Sequential(
            *_block(nn.Conv2d(2 * channels, 64, 7, padding=3), 64),
            *_block(nn.Conv2d(64, 128, 4, stride=2, padding=1), 128),
            *_block(nn.Conv2d(128, 256, 4, stride=2, padding=1), 256),
            *[OfficialResidualBlock(256) for _ in range(3)],
        )
        self.decoder = nn.Sequential(
            *[OfficialResidualBlock(256) for _ in range(3)],
            *_block(nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1, bias=False), 128),
            *_block(nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, bias=False), 64),
        )
        self.residual = nn.Sequential(nn.Conv2d(64 + channels, channels, 3, padding=1, bias=False), nn.Tanh())

    def forward(self, x: Tensor, feature: Tensor) -> Tensor:
        scaled = x * 2 - 1
        h = self.decoder(self.image_encoder(torch.cat([self.label_encoder(feature), scaled], 1)))
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, size=x.shape[-2:], mode="bilinear")
        return (self.residual(torch.cat([h, scaled], 1)) + 1) / 2


class OfficialProSGANDiscriminator(nn.Module):
    """The official PatchGAN (``main``: spectral-norm stride-2 convolutions with LeakyReLU(0.01); ``fc``: one
    convolution over the remaining map to ``num_classes + 1``, no spectral norm, no bias), returned as (N, C + 1)."""

    def __init__(self, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, side = channels, size
        for i in range(_down_stages(size)):
            out = 64 * 2**i
            layers += [
                spectral_norm(nn.Conv2d(width, out, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.01, inplace=True),
            ]
            width, side = out, side // 2
        self.main = nn.Sequential(*layers)
        self.fc = nn.Conv2d(width, num_classes + 1, side, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.main(x * 2 - 1)).flatten(1)


def build_networks(
    layout: str, channels: int, size: int, num_classes: int | None = None
) -> tuple[nn.Module, nn.Module | None]:
    """The generator and (given ``num_classes``) the discriminator of ``layout`` for images of this shape."""
    if layout not in LAYOUTS:
        raise ValueError(f"ProS-GAN layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    official = layout == "official"
    gen = (OfficialProSGANGenerator if official else ProSGANGenerator)(channels, size)
    if num_classes is None:
        return gen, None
    disc = (OfficialProSGANDiscriminator if official else ProSGANDiscriminator)(channels, size, num_classes)
    return gen, disc
