"""Datasets by name: ``load_dataset(name, ...)`` and ``list_datasets()`` drive the CLI, configs and tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from robusthash.data import cifar, fashion_mnist, lists
from robusthash.data.base import DatasetSplits, TensorImageSet, augment, iterate_batches, labels_of
from robusthash.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    location: Callable[[], str]
    loader: Callable[..., DatasetSplits]


def _fmnist_location() -> str:
    return f"{fashion_mnist.default_data_dir()} (or --data-dir; env {fashion_mnist.DATA_DIR_ENV})"


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    _REGISTRY[spec.name] = spec


register_dataset(
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST, 10 classes, 28x28 grey; query 1,000 / train 5,000 / database 10,000 (or all 64,000)",
        _fmnist_location,
        lambda data_dir, seed, database, image_size: fashion_mnist.load_fashion_mnist(
            data_dir, seed, database
        ),
    )
)
register_dataset(
    DatasetSpec(
        "fashion-mosaic",
        "2x2 mosaics of Fashion-MNIST (56x56), multi-label (1-3 of 10); query 1,000 / train 5,000 / db 10,000",
        _fmnist_location,
        lambda data_dir, seed, database, image_size: fashion_mnist.load_fashion_mosaic(
            data_dir, seed, database
        ),
    )
)
for _fmt, _desc in (
    ("deephash-list", "your images: train.txt / test.txt / database.txt with 'relpath l1 ... lC' lines"),
    ("prosgan-list", "your images: {train,test,database}_img.txt + _label.txt (ProS-GAN / CgAT format)"),
):
    register_dataset(
        DatasetSpec(
            _fmt,
            _desc,
            lambda: "--data-dir DIR (required)",
            lambda data_dir, seed, database, image_size, _f=_fmt: lists.load_list_dataset(
                data_dir, _f, image_size or 224
            ),
        )
    )


for _protocol, _desc in (
    ("cifar10", "CIFAR-10 (your pickles): query 1,000 / train 5,000 / database 54,000"),
    ("cifar10-1", "CIFAR-10 (your pickles): query 1,000 / database 59,000 (includes train 5,000)"),
    ("cifar10-2", "CIFAR-10 (your pickles): query 10,000 / train = database 50,000"),
):
    register_dataset(
        DatasetSpec(
            _protocol,
            _desc,
            lambda: f"--data-dir DIR/cifar-10-batches-py (or env {cifar.DATA_DIR_ENV})",
            lambda data_dir, seed, database, image_size, _p=_protocol: cifar.load_cifar10(_p, data_dir, seed),
        )
    )


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def dataset_spec(name: str) -> DatasetSpec:
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    seed: int = 0,
    database: int | str = 10_000,
    image_size: int | None = None,
) -> DatasetSplits:
    """Load a registered dataset's train / query / database splits (seeded where the splits are drawn)."""
    return dataset_spec(name).loader(data_dir=data_dir, seed=seed, database=database, image_size=image_size)


__all__ = [
    "DatasetSplits",
    "DatasetSpec",
    "TensorImageSet",
    "augment",
    "dataset_spec",
    "iterate_batches",
    "labels_of",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
