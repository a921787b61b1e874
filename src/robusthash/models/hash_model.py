"""The hashing network: backbone, then ``Linear -> tanh`` to K bits (PgA eq. 1, CgAT eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robusthash.codes import binarize


class HashModel(nn.Module):
    """``f(x) = tanh(W phi(x) + c)`` on images in [0, 1]; the normalisation is inside the model.

    - ``model(x)`` is the continuous code in (-1, 1); ``model.preactivation(x)`` the logits ``h`` before tanh
      (attacks use it to avoid saturated-tanh gradients).
    - ``model.encode(x)`` is the binary code ``sign(h)`` in {-1, +1} with sign(0) = +1 (:func:`binarize`).
    - Grey inputs are repeated to the backbone's channel count; inputs smaller than the backbone's minimum
      size (``input_size``) are resized bilinearly inside the model, so attacks still work in pixel space.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        bits: int,
        in_channels: int,
        backbone_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if bits < 1:
            raise ValueError(f"bits must be >= 1, got {bits}")
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)} and {len(std)}")
        self.backbone = backbone
        self.hash_layer = nn.Linear(feature_dim, bits)
        nn.init.normal_(self.hash_layer.weight, 0.0, 0.01)
        nn.init.zeros_(self.hash_layer.bias)
        self.bits = bits
        self.in_channels = in_channels
        self.backbone_channels = backbone_channels
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.config = dict(config or {})

    def features(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        if self.backbone_channels != self.in_channels:
            x = x.expand(-1, self.backbone_channels, -1, -1)
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return self.backbone(x)

    def preactivation(self, x: Tensor) -> Tensor:
        """The logits ``h``, always in fp32 (also under bf16 autocast: codes and losses stay exact)."""
        return self.hash_layer(self.features(x)).float()

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.preactivation(x))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return binarize(self.preactivation(x))
