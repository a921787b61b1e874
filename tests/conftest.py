"""Shared fixtures: the real Fashion-MNIST splits (loaded once) and a tiny trained model."""

from __future__ import annotations

import os

import pytest
import torch

from robusthash.data import fashion_mnist

# two threads, as CI has, unless OMP_NUM_THREADS says otherwise (the suite must pass under 1 and 2)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def _have_fashion_mnist() -> bool:
    directory = fashion_mnist.default_data_dir()
    return all(
        (directory / f"{stem}.gz").is_file() or (directory / stem).is_file()
        for stem in fashion_mnist.FILES.values()
    )


needs_fashion_mnist = pytest.mark.skipif(
    not _have_fashion_mnist(),
    reason=f"Fashion-MNIST not installed ({fashion_mnist.HOW_TO_GET}); 'make test' installs it",
)


@pytest.fixture(scope="session")
def fmnist():
    if not _have_fashion_mnist():
        pytest.skip("Fashion-MNIST not installed")
    from robusthash.data import load_dataset

    return load_dataset("fashion-mnist")


@pytest.fixture(scope="session")
def toy():
    """A small 3-class problem and a DPH model trained on it in a few seconds (shared by attack tests)."""
    from robusthash.training import TrainConfig, train
    from tests.test_training import toy_data

    data = toy_data(n_per_class=40)
    result = train(
        data, TrainConfig(bits=16, loss="dph", epochs=4, batch_size=16, lr=3e-3, seed=1), quiet=True
    )
    return data, result.model
