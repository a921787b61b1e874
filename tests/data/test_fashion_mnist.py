from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from robusthash.data import fashion_mnist, load_dataset
from robusthash.errors import UserError
from tests.conftest import needs_fashion_mnist


def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def test_read_idx_roundtrip_and_corruption(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "a.gz"), arr)
    _write_idx(tmp_path / "b", arr, compress=False)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "b"), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(UserError, match="not an IDX file"):
        fashion_mnist.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(UserError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "short")


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(UserError, match="valid: .*fashion-mnist"):
        load_dataset("cifar-11")


def test_splits_from_a_small_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    train_y = np.repeat(np.arange(10), 700)
    test_y = np.repeat(np.arange(10), 120)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (7000, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_y)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (1200, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y)
    data = load_dataset("fashion-mnist", tmp_path, seed=1, database=1000)
    assert (len(data.train), len(data.query), len(data.database)) == (5000, 1000, 1000)
    for split in (data.train, data.query, data.database):
        counts = split.labels.sum(0)
        assert (counts == counts[0]).all()  # balanced per class
    everything = load_dataset("fashion-mnist", tmp_path, seed=1, database="all")
    assert len(everything.database) == 7000 + 1200 - 5000 - 1000
    with pytest.raises(UserError, match="multiple of 10"):
        load_dataset("fashion-mnist", tmp_path, database=15)


@needs_fashion_mnist
def test_fashion_mnist_protocol(fmnist):
    assert (len(fmnist.query), len(fmnist.train), len(fmnist.database)) == (1000, 5000, 10000)
    assert fmnist.image_shape == (1, 28, 28) and fmnist.num_classes == 10
    assert torch.equal(fmnist.query.labels.sum(0), torch.full((10,), 100.0))
    assert torch.equal(fmnist.train.labels.sum(0), torch.full((10,), 500.0))
    assert (fmnist.train.labels.sum(1) == 1).all()
    # splits are disjoint: no identical image appears in two splits (exact duplicates are vanishingly rare)
    keys = [
        {bytes(img.numpy().tobytes()) for img in s.images}
        for s in (fmnist.train, fmnist.query, fmnist.database)
    ]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    x, y, i = fmnist.query[3]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and int(i) == 3


@needs_fashion_mnist
def test_splits_are_seeded():
    a = load_dataset("fashion-mnist", seed=3)
    b = load_dataset("fashion-mnist", seed=3)
    c = load_dataset("fashion-mnist", seed=4)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)


@needs_fashion_mnist
def test_fashion_mosaic_is_multilabel_union_of_tiles():
    data = load_dataset("fashion-mosaic", seed=0, database=2000)
    assert data.image_shape == (1, 56, 56)
    assert (len(data.query), len(data.train), len(data.database)) == (1000, 5000, 2000)
    n_labels = data.train.labels.sum(1)
    assert n_labels.min() == 1 and n_labels.max() == 3
    assert (n_labels > 1).float().mean() > 0.5  # mostly multi-label
    again = load_dataset("fashion-mosaic", seed=0, database=2000)
    assert torch.equal(data.query.images, again.query.images)
