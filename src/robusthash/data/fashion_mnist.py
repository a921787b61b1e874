"""Fashion-MNIST (real 28x28 grey images, 10 classes) and fashion-mosaic (its multi-label composition).

The IDX files come from Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``) or
any folder given as ``data_dir``; nothing is downloaded.

Split protocol (the hashing literature's CIFAR-10 protocol, seeded):

- query: 100 images per class from the test files (1,000);
- train: 500 images per class from the training files (5,000);
- database: from all remaining images of both files (64,000), 1,000 per class by default (10,000), or all of
  them with ``database="all"``.

fashion-mosaic (real images in a synthetic composition): each item is a 2x2 mosaic (56x56) of four
Fashion-MNIST images. A mosaic first draws its number of distinct classes k uniformly from {1, 2, 3}, then
k classes uniformly without replacement; one tile per class, the remaining tiles from the same classes, tile
positions shuffled. Its label is the union of the tile classes, so items are multi-label like NUS-WIDE and
MS-COCO (1-3 of 10 labels). Query tiles come from the test files; train and database tiles from two
disjoint halves of the training files, so no image is shared across splits.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

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

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "ROBUSTHASH_FASHION_MNIST"
CLASS_NAMES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
MEAN, STD = (0.2860,), (0.3530,)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = (
    "install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
    "or pass --data-dir DIR with the four Fashion-MNIST IDX files (.gz or uncompressed)"
)


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DIR))


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    raise UserError(f"Fashion-MNIST file {stem}.gz not found in {data_dir}: {HOW_TO_GET}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) of unsigned bytes into an array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}; {HOW_TO_GET}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes; {HOW_TO_GET}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) - offset != count:
        raise UserError(
            f"{path} is truncated or corrupt: expected {count} values, found {len(data) - offset}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_raw(data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays: train images (60000, 28, 28), train labels, test images (10000, 28, 28), test labels."""
    directory = Path(data_dir) if data_dir else default_data_dir()
    arrays = [read_idx(_find(directory, FILES[key])) for key in FILES]
    train_x, train_y, test_x, test_y = arrays
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise UserError(f"image and label counts differ in {directory}; {HOW_TO_GET}")
    return train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64)


def _one_hot(labels: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(labels), len(CLASS_NAMES)).float()


def _tensor_set(images: np.ndarray, labels: torch.Tensor) -> TensorImageSet:
    return TensorImageSet(torch.from_numpy(np.ascontiguousarray(images))[:, None], labels)


def load_fashion_mnist(
    data_dir: str | Path | None = None, seed: int = 0, database: int | str = 10_000
) -> DatasetSplits:
    """Fashion-MNIST under the CIFAR-10 hashing protocol (module docstring)."""
    train_x, train_y, test_x, test_y = load_raw(data_dir)
    rng = np.random.default_rng(seed)
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y])
    n_train_file = len(train_x)
    query = sample_per_class(labels, np.arange(n_train_file, len(images)), 100, rng, CLASS_NAMES)
    train = sample_per_class(labels, np.arange(n_train_file), 500, rng, CLASS_NAMES)
    remaining = np.setdiff1d(np.arange(len(images)), np.concatenate([query, train]))
    if database == "all":
        db = remaining
    else:
        size = int(database)
        if size <= 0 or size % len(CLASS_NAMES) or size > len(remaining):
            raise UserError(
                f"database size {database!r} must be 'all' or a positive multiple of 10 up to {len(remaining)}"
            )
        db = sample_per_class(labels, remaining, size // len(CLASS_NAMES), rng, CLASS_NAMES)
    return DatasetSplits(
        name="fashion-mnist",
        train=_tensor_set(images[train], _one_hot(labels[train])),
        query=_tensor_set(images[query], _one_hot(labels[query])),
        database=_tensor_set(images[db], _one_hot(labels[db])),
        num_classes=len(CLASS_NAMES),
        image_shape=(1, 28, 28),
        mean=MEAN,
        std=STD,
        class_names=list(CLASS_NAMES),
        info={
            "protocol": "query 100/class from test files, train 500/class, database from the rest",
            "seed": seed,
        },
    )


def _mosaics(
    images: np.ndarray, labels: np.ndarray, pool: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, torch.Tensor]:
    n_classes = len(CLASS_NAMES)
    by_class = [pool[labels[pool] == c] for c in range(n_classes)]
    out = np.empty((count, 56, 56), dtype=np.uint8)
    multi_hot = torch.zeros(count, n_classes)
    for m in range(count):
        k = int(rng.integers(1, 4))
        classes = rng.choice(n_classes, size=k, replace=False)
        tile_classes = np.concatenate([classes, rng.choice(classes, size=4 - k)])
        rng.shuffle(tile_classes)
        for t, c in enumerate(tile_classes):
            r, col = divmod(t, 2)
            out[m, 28 * r : 28 * r + 28, 28 * col : 28 * col + 28] = images[rng.choice(by_class[c])]
        multi_hot[m, classes] = 1
    return out, multi_hot


MAX_MOSAIC_DATABASE = 1_000_000  # 3 GiB of 56 x 56 mosaics; the pool of 30,000 tiles repeats well before that


def load_fashion_mosaic(
    data_dir: str | Path | None = None, seed: int = 0, database: int | str = 10_000
) -> DatasetSplits:
    """fashion-mosaic: 1,000 query, 5,000 train and 10,000 (or ``database``) database mosaics (module docstring)."""
    train_x, train_y, test_x, test_y = load_raw(data_dir)
    rng = np.random.default_rng(seed)
    size = 10_000 if database == "all" else int(database)
    if not 0 < size <= MAX_MOSAIC_DATABASE:
        raise UserError(
            f"database size {database!r} must be 'all' (10000) or a positive integer up to "
            f"{MAX_MOSAIC_DATABASE} (mosaics are synthesised in memory, 3 KiB each)"
        )
    halves = rng.permutation(len(train_x))
    train_pool, db_pool = np.sort(halves[: len(halves) // 2]), np.sort(halves[len(halves) // 2 :])
    q_img, q_lab = _mosaics(test_x, test_y, np.arange(len(test_x)), 1_000, rng)
    t_img, t_lab = _mosaics(train_x, train_y, train_pool, 5_000, rng)
    d_img, d_lab = _mosaics(train_x, train_y, db_pool, size, rng)
    return DatasetSplits(
        name="fashion-mosaic",
        train=_tensor_set(t_img, t_lab),
        query=_tensor_set(q_img, q_lab),
        database=_tensor_set(d_img, d_lab),
        num_classes=len(CLASS_NAMES),
        image_shape=(1, 56, 56),
        mean=MEAN,
        std=STD,
        class_names=list(CLASS_NAMES),
        info={"protocol": "2x2 mosaics of Fashion-MNIST items, label = union of tile classes", "seed": seed},
    )


def _location() -> str:
    return f"{default_data_dir()} (or --data-dir; env {DATA_DIR_ENV})"


register_dataset(
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST, 10 classes, 28x28 grey; query 1,000 / train 5,000 / database 10,000 (or all 64,000)",
        _location,
        lambda data_dir, seed, database, image_size: load_fashion_mnist(data_dir, seed, database),
    )
)
register_dataset(
    DatasetSpec(
        "fashion-mosaic",
        "2x2 mosaics of Fashion-MNIST (56x56), multi-label (1-3 of 10); query 1,000 / train 5,000 / db 10,000",
        _location,
        lambda data_dir, seed, database, image_size: load_fashion_mosaic(data_dir, seed, database),
    )
)
