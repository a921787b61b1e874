"""Datasets by name: ``load_dataset(name, ...)`` and ``list_datasets()`` drive the CLI, configs and tests.

Each dataset module of this package registers its datasets with ``register_dataset``; all are imported here.
"""

from __future__ import annotations

from pathlib import Path

from robusthash.data.base import (
    DATASETS,
    DatasetSpec,
    DatasetSplits,
    TensorImageSet,
    augment,
    iterate_batches,
    labels_of,
    register_dataset,
)
from robusthash.registry import import_submodules

import_submodules(__name__, __path__, skip=lambda name: name == "base")


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name)


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
    "DATASETS",
    "DatasetSpec",
    "DatasetSplits",
    "TensorImageSet",
    "augment",
    "dataset_spec",
    "iterate_batches",
    "labels_of",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
