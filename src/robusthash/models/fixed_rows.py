"""Batch-invariant model calls: every call runs on blocks of exactly ``rows`` images.

CPU and GPU kernels pick their blocking and their reduction order from the tensor shapes, batch size included
(docs/choices.md, "Fixed-row model calls"). Optimisers that amplify such noise (HAG's SGD at lr 100) then move
pixels across the whole eps-ball. A model call on a fixed shape, whose rows are computed independently of one
another (convolutions, GEMMs and eval-mode normalisation all are), gives each image the same floats whichever
images share its block and wherever it sits there: the property that makes a query's result independent of the
batch size and of the other queries, by construction rather than within a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from robusthash.codes import binarize

DEFAULT_ROWS = 32


def in_blocks(fn: Callable[..., Tensor], rows: int, *inputs: Tensor) -> Tensor:
    """``fn(*inputs)`` computed on blocks of exactly ``rows`` rows of every input (the last block padded with
    copies of its first row, whose outputs are dropped), for a row-wise ``fn``. Differentiable."""
    n = inputs[0].shape[0]
    if n == 0:
        return fn(*inputs)
    outputs = []
    for start in range(0, n, rows):
        blocks = [t[start : start + rows] for t in inputs]
        short = rows - blocks[0].shape[0]
        if short:
            blocks = [torch.cat([b, b[:1].expand(short, *b.shape[1:])]) for b in blocks]
        outputs.append(fn(*blocks)[: rows - short])
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class FixedRows(nn.Module):
    """``model`` whose ``preactivation`` always runs on blocks of ``rows`` images (the last block padded with
    copies of its first image, whose outputs are dropped). Differentiable; other attributes are the model's."""

    def __init__(self, model: nn.Module, rows: int = DEFAULT_ROWS) -> None:
        super().__init__()
        if not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be a positive integer, got {rows!r}")
        self.inner = model
        self.rows = rows

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def preactivation(self, x: Tensor) -> Tensor:
        return in_blocks(self.inner.preactivation, self.rows, x)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.preactivation(x))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return binarize(self.preactivation(x))
