"""CIFAR-10 from the ``cifar-10-batches-py`` pickles you download yourself, under the three hashing protocols.

- ``cifar10``: query 100 / class and train 500 / class drawn from all 60,000 images, database the other 54,000.
- ``cifar10-1``: query 100 / class, database the other 59,000, train 500 / class drawn from the database.
- ``cifar10-2``: query = the 10,000 test images, train = database = the 50,000 training images.

Draws are seeded. The pickles are read with an unpickler that only accepts what the CIFAR files contain (dicts,
lists, bytes and numpy arrays), so a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robusthash.data.base import (
    DatasetSpec,
    DatasetSplits,
    TensorImageSet,
    register_dataset,
    sample_per_class,
)
from robusthash.errors import UserError

DATA_DIR_ENV = "ROBUSTHASH_CIFAR10"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
HOW_TO_GET = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and pass "
    f"--data-dir .../cifar-10-batches-py (or set {DATA_DIR_ENV})"
)
PROTOCOLS = ("cifar10", "cifar10-1", "cifar10-2")
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch file")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one ``cifar-10-batches-py`` file."""
    if not path.is_file():
        raise UserError(f"CIFAR-10 file {path} not found: {HOW_TO_GET}")
    try:
        with path.open("rb") as fh:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a CIFAR-10 batch file: {exc}") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"{path} is not a CIFAR-10 batch file: data of shape {data.shape}")
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{path} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(protocol: str, data_dir: str | Path | None = None, seed: int = 0) -> DatasetSplits:
    """Load CIFAR-10 under ``protocol`` (module docstring)."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown CIFAR-10 protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    folder = Path(data_dir or os.environ.get(DATA_DIR_ENV, ""))
    if not str(folder) or not folder.is_dir():
        raise UserError(f"CIFAR-10 folder {str(folder) or '(none given)'} not found: {HOW_TO_GET}")
    parts = [read_batch(folder / name) for name in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_batch(folder / "test_batch")
    images, labels = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    rng = np.random.default_rng(seed)
    everything = np.arange(len(images))
    if protocol == "cifar10":
        query = sample_per_class(labels, everything, 100, rng, CLASS_NAMES)
        train = sample_per_class(labels, np.setdiff1d(everything, query), 500, rng, CLASS_NAMES)
        database = np.setdiff1d(everything, np.concatenate([query, train]))
    elif protocol == "cifar10-1":
        query = sample_per_class(labels, everything, 100, rng, CLASS_NAMES)
        database = np.setdiff1d(everything, query)
        train = sample_per_class(labels, database, 500, rng, CLASS_NAMES)
    else:
        query = np.arange(len(train_x), len(images))
        train = database = np.arange(len(train_x))

    def split(indices: np.ndarray) -> TensorImageSet:
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels[indices]), len(CLASS_NAMES)).float()
        return TensorImageSet(torch.from_numpy(np.ascontiguousarray(images[indices])), one_hot)

    return DatasetSplits(
        name=protocol,
        train=split(train),
        query=split(query),
        database=split(database),
        num_classes=len(CLASS_NAMES),
        image_shape=(3, 32, 32),
        mean=MEAN,
        std=STD,
        class_names=list(CLASS_NAMES),
        info={"source": str(folder), "seed": seed},
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
            lambda: f"--data-dir DIR/cifar-10-batches-py (or env {DATA_DIR_ENV})",
            lambda data_dir, seed, database, image_size, _p=_protocol: load_cifar10(_p, data_dir, seed),
        )
    )
