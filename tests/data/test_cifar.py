from __future__ import annotations

import pickle

import numpy as np
import pytest

from robusthash.data import load_dataset
from robusthash.errors import UserError


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """Six tiny batch files in the cifar-10-batches-py format: 700 images per class in all."""
    folder = tmp_path_factory.mktemp("cifar-10-batches-py")
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = (np.arange(1000 if i < 5 else 2000) + i) % 10
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        data[:, 0] = i  # the file an image came from
        with (folder / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": b"x"}, fh)
    return folder


def test_cifar10_protocol(cifar_dir):
    data = load_dataset("cifar10", cifar_dir, seed=1)
    assert (len(data.query), len(data.train), len(data.database)) == (1000, 5000, 7000 - 6000)
    assert data.image_shape == (3, 32, 32)
    for split in (data.query, data.train):
        counts = split.labels.sum(0)
        assert (counts == counts[0]).all()
    again = load_dataset("cifar10", cifar_dir, seed=1)
    assert (again.query.images == data.query.images).all()


def test_cifar10_1_database_includes_training_set(cifar_dir):
    data = load_dataset("cifar10-1", cifar_dir)
    assert (len(data.query), len(data.train), len(data.database)) == (1000, 5000, 6000)
    db = {bytes(x.numpy().tobytes()) for x in data.database.images}
    assert all(bytes(x.numpy().tobytes()) in db for x in data.train.images[:50])


def test_cifar10_2_uses_the_test_batch_as_queries(cifar_dir):
    data = load_dataset("cifar10-2", cifar_dir)
    assert (len(data.query), len(data.train), len(data.database)) == (2000, 5000, 5000)
    assert (data.query.images[:, 0, 0, 0] == 5).all()  # every query from test_batch


def test_missing_and_malicious_files(cifar_dir, tmp_path):
    with pytest.raises(UserError, match="cs.toronto.edu"):
        load_dataset("cifar10", tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (bad / name).write_bytes((cifar_dir / name).read_bytes())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with (bad / "data_batch_1").open("wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(UserError, match="not allowed"):
        load_dataset("cifar10", bad)
