"""Split containers, batch iteration and batch augmentation shared by every dataset.

Every split yields ``(image, label, index)``: images are float tensors in [0, 1] of shape (C, H, W) (the
normalisation lives inside the model), labels are multi-hot float rows of shape (C,), so single- and
multi-label data share one code path, and ``index`` is the item's position in its split (code banks need it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robusthash.errors import UserError
from robusthash.registry import Registry

Batch = tuple[Tensor, Tensor, Tensor]


class TensorImageSet(Dataset):
    """A split held in memory: ``images`` uint8 (N, C, H, W), ``labels`` float32 multi-hot (N, C)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.float32)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Batch:
        return self.images[index].float().div_(255), self.labels[index], torch.tensor(index)

    def batch(self, indices: Tensor) -> Batch:
        return self.images[indices].float().div_(255), self.labels[indices], indices


@dataclass
class DatasetSplits:
    """The three splits of the hashing protocol and what a model needs to know about them."""

    name: str
    train: Dataset
    query: Dataset
    database: Dataset
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Dataset:
        return {"train": self.train, "query": self.query, "database": self.database}[name]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sizes": {s: len(self.split(s)) for s in ("train", "query", "database")},
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            **self.info,
        }


def labels_of(dataset: Dataset) -> Tensor:
    """The (N, C) multi-hot label matrix of a split."""
    return dataset.labels  # type: ignore[attr-defined]


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    indices: Sequence[int] | Tensor | None = None,
    num_workers: int = 0,
) -> Iterator[Batch]:
    """Yield ``(images, labels, indices)`` batches; in-memory splits are sliced directly (no DataLoader)."""
    order = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    if shuffle:
        order = order[torch.randperm(len(order), generator=generator)]
    if isinstance(dataset, TensorImageSet):
        for start in range(0, len(order), batch_size):
            yield dataset.batch(order[start : start + batch_size])
        return
    subset = torch.utils.data.Subset(dataset, order.tolist())
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    yield from loader


def augment(images: Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True) -> Tensor:
    """Batched training augmentation: random shift by up to ``pad`` pixels (zero fill) and horizontal flip.

    Works on any device; randomness comes from the CPU ``generator`` so runs are reproducible.
    """
    n, _, h, w = images.shape
    out = images
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :]).to(images.device)
        cols = (dx[:, None] + torch.arange(w)[None, :]).to(images.device)
        batch = torch.arange(n, device=images.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out.contiguous()


def sample_per_class(
    labels: np.ndarray,
    candidates: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
    class_names: Sequence[str],
) -> np.ndarray:
    """``per_class`` indices of each class drawn without replacement from ``candidates``, sorted.

    ``labels`` holds the integer class of every index; a class with too few candidates is a ``UserError``.
    """
    chosen = []
    for c, name in enumerate(class_names):
        pool = candidates[labels[candidates] == c]
        if len(pool) < per_class:
            raise UserError(f"class {name!r} has {len(pool)} images here, {per_class} needed")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: ``load(data_dir, seed, database, image_size) -> DatasetSplits``."""

    name: str
    description: str
    location: Callable[[], str]
    loader: Callable[..., DatasetSplits]


DATASETS: Registry[DatasetSpec] = Registry("dataset")
register_dataset = DATASETS.register
