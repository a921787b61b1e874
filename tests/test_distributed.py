"""torch.distributed with the gloo backend, 2 processes on the CPU: a sharded run is the single-process run."""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from robusthash import metrics
from robusthash.attacks import ATTACKS, list_attacks
from robusthash.checkpoint import read_checkpoint
from robusthash.distributed import World, gather_strided, strided
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.training import TrainConfig, train
from tests.conftest import needs_fashion_mnist
from tests.test_training import toy_data

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(job, port: int, *args) -> None:
    """Run ``job(rank, *args)`` in ``WORLD`` processes joined like torchrun does (environment variables)."""
    mp.start_processes(_rank_main, args=(job, port, args), nprocs=WORLD, start_method="spawn", join=True)


def _rank_main(rank: int, job, port: int, args) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from robusthash.distributed import process_group

    with process_group("cpu", timeout_s=300):
        try:
            job(rank, *args)
        except Exception:
            traceback.print_exc()
            raise


def _quick(options: dict) -> dict:
    """An attack's test options, shorter still: equality needs no strong attack."""
    caps = {"steps": 10, "prototype_steps": 40, "epochs": 1}
    return {k: min(v, caps[k]) if k in caps else v for k, v in options.items()}


def _suite() -> AttackSuite:
    # the library's attacks (another test registers a throw-away attack in this process only)
    names = [n for n in list_attacks() if ATTACKS.get(n).__module__.startswith("robusthash.")]
    return AttackSuite(
        attacks=names,
        protocol="default",
        eps=16 / 255,
        topk=None,
        batch_size=4,
        seed=3,
        gallery_queries=2,
        attack_options={n: _quick(ATTACKS.get(n).test_options) for n in names},
    )


def _attack_job(rank: int, checkpoint: str, out: str) -> None:
    model = read_checkpoint(checkpoint).build_model()
    run = evaluate_attacks(model, toy_data(n_per_class=20), _suite(), quiet=True, surrogates={"self": model})
    if rank == 0:
        run.write(out)


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "toy.pt"
    train(
        toy_data(n_per_class=20),
        TrainConfig(bits=16, loss="dph", epochs=3, batch_size=16, lr=3e-3, seed=1),
        out,
        quiet=True,
    )
    return out


def test_every_attack_sharded_over_two_processes_equals_one_process(toy_checkpoint, tmp_path):
    from robusthash.results import load_results

    _spawn(_attack_job, _free_port(), str(toy_checkpoint), str(tmp_path / "two.json"))
    sharded = load_results(tmp_path / "two.json")
    model = read_checkpoint(toy_checkpoint).build_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: trained attacks (ProS-GAN, THA) then fit the same floats
    try:
        single = evaluate_attacks(
            model, toy_data(n_per_class=20), _suite(), quiet=True, surrogates={"self": model}
        )
    finally:
        torch.set_num_threads(threads)
    assert sharded.world_size == 2 and single.world_size == 1
    assert sharded.query_indices == single.query_indices
    assert sharded.clean.ap == single.clean.ap
    assert [a.name for a in sharded.attacks] == [a.name for a in single.attacks]
    for a, b in zip(sharded.attacks, single.attacks, strict=True):
        # codes, hence every score, are identical; pixels agree to the CPU kernels' batch-size rounding
        assert a.scores.ap == b.scores.ap and a.bits_flipped == b.bits_flipped, a.name
        assert a.tap == b.tap and a.success == b.success, a.name
        np.testing.assert_allclose(a.linf, b.linf, atol=1e-4)
        assert a.wall_seconds is not None and a.wall_seconds <= a.seconds + 1e-9
    assert sharded.gallery is not None
    from robusthash.app.report.tables import attack_table

    assert "wall s (2 processes)" in attack_table(sharded) and "wall s" not in attack_table(single)
    assert [i.adversarial_top for i in sharded.gallery.items] == [
        i.adversarial_top for i in single.gallery.items
    ]


def _metrics_job(rank: int, folder: str) -> None:
    from robusthash.distributed import TorchCollective

    q, ql, d, dl = (np.load(Path(folder) / f"{n}.npy") for n in ("q", "ql", "d", "dl"))
    bounds = [0, 130, len(d)]  # unequal contiguous shards
    part = slice(bounds[rank], bounds[rank + 1])
    report = metrics.streaming_report(
        q, ql, d[part], dl[part], bits=8, topk=60, ns=(10, 50, 400), chunk=17, collective=TorchCollective()
    )
    np.save(Path(folder) / f"ap{rank}.npy", report["ap"])
    np.save(Path(folder) / f"pn{rank}.npy", report["p_at_n"]["precision"])


def test_streamed_metrics_over_two_database_shards(tmp_path):
    rng = np.random.default_rng(0)
    q, d = rng.choice([-1, 1], (25, 8)), rng.choice([-1, 1], (300, 8))
    ql, dl = (rng.random((25, 4)) < 0.3).astype(int), (rng.random((300, 4)) < 0.3).astype(int)
    for name, codes in (("q", q), ("d", d), ("ql", ql), ("dl", dl)):
        np.save(tmp_path / f"{name}.npy", metrics.pack_bits(codes == 1))
    _spawn(_metrics_job, _free_port(), str(tmp_path))
    expected = metrics.retrieval_report(q, d, ql, dl, topk=60, ns=(10, 50, 400))
    for rank in range(WORLD):
        np.testing.assert_allclose(np.load(tmp_path / f"ap{rank}.npy"), expected["ap"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            np.load(tmp_path / f"pn{rank}.npy"), expected["p_at_n"]["precision"], atol=1e-12
        )


def test_strided_shards_gather_back_in_order_in_one_process():
    items = torch.arange(7)
    assert torch.equal(strided(items, World(1, 3)), torch.tensor([1, 4]))
    assert torch.equal(gather_strided(items * 2, 7), items * 2)  # one process: the identity


# ---------------------------------------------------------------------------------------- distributed training
TRAIN_RECIPE = dict(bits=16, loss="dpsh", epochs=4, batch_size=16, lr=3e-3, seed=2)


def _check_equal_on_every_rank(tensor: torch.Tensor, what: str) -> None:
    import torch.distributed as dist

    copies = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, tensor.contiguous())
    assert all(torch.equal(c, copies[0]) for c in copies), f"{what} differs between ranks"


def _watch_banks(monkeypatch_steps: list) -> None:
    """After every update, the loss's bank U and CgAT's code bank must be identical on both ranks."""
    from robusthash.defenses.codebank import TrainingCodeBank
    from robusthash.losses.base import BankLoss

    loss_update, bank_update = BankLoss.update_bank, TrainingCodeBank.update

    def checked_loss_update(self, u, labels, indices):
        out = loss_update(self, u, labels, indices)
        _check_equal_on_every_rank(self.U, "the loss's bank U")
        monkeypatch_steps.append(1)
        return out

    def checked_bank_update(self, indices, values):
        bank_update(self, indices, values)
        _check_equal_on_every_rank(self.values, "the CgAT code bank")

    BankLoss.update_bank, TrainingCodeBank.update = checked_loss_update, checked_bank_update


def _train_job(rank: int, out: str, die_after_epoch: int | None, defend_out: str | None) -> None:
    import robusthash.training as training
    from robusthash.defenses import DefenseConfig, defend

    steps: list = []
    _watch_banks(steps)
    if die_after_epoch is not None:  # killed (no clean exit, no cleanup) right after that epoch's checkpoint
        real_barrier, done = training.barrier, []

        def barrier_then_die() -> None:
            real_barrier()
            done.append(1)
            if len(done) == die_after_epoch:
                os._exit(0)

        training.barrier = barrier_then_die
    result = train(toy_data(n_per_class=20), TrainConfig(**TRAIN_RECIPE), out, quiet=True)
    assert steps, "the bank was never checked"
    for name, tensor in [*result.model.named_parameters(), *result.model.named_buffers()]:
        _check_equal_on_every_rank(tensor.detach(), name)  # batch-norm statistics included
    if defend_out:
        defend(
            read_checkpoint(out),
            toy_data(n_per_class=20),
            DefenseConfig(method="cgat", epochs=1, batch_size=16, steps=3),
            defend_out,
            quiet=True,
        )


def _clean_map(path) -> float:
    from robusthash.evaluation import evaluate_retrieval

    return evaluate_retrieval(read_checkpoint(path).build_model(), toy_data(n_per_class=20), topk=None)["map"]


def test_two_process_training_is_killed_resumes_and_matches_one_process(tmp_path):
    import shutil

    two = tmp_path / "two.pt"
    _spawn(_train_job, _free_port(), str(two), 1, None)  # killed after epoch 1
    assert read_checkpoint(two).state["epoch"] == 1
    shutil.copy(two, tmp_path / "other-world.pt")
    _spawn(_train_job, _free_port(), str(two), None, str(tmp_path / "cgat.pt"))  # resumes: epochs 2-4, CgAT
    assert read_checkpoint(two).state["epoch"] == TRAIN_RECIPE["epochs"]
    assert read_checkpoint(tmp_path / "cgat.pt").meta["kind"] == "defended"
    # the same checkpoint resumes under world size 1
    train(toy_data(n_per_class=20), TrainConfig(**TRAIN_RECIPE), tmp_path / "other-world.pt", quiet=True)
    single = train(toy_data(n_per_class=20), TrainConfig(**TRAIN_RECIPE), tmp_path / "one.pt", quiet=True)
    one_map = _clean_map(single.path)
    assert one_map > 0.8
    # the global batch is the same, but batch-norm statistics are per rank and the shuffles differ
    for path in (two, tmp_path / "other-world.pt"):
        assert abs(_clean_map(path) - one_map) < 0.05, (_clean_map(path), one_map)


# ---------------------------------------------------------------------------------------------- the command line
@needs_fashion_mnist
def test_torchrun_attack_writes_once_and_equals_the_single_process_command(tmp_path):
    import json
    import subprocess
    import sys

    from robusthash.app import zoo

    model = zoo.get("fashion-mnist-dph-32").path
    common = [
        "attack",
        "--model",
        str(model),
        "--attack",
        "pga,dhta",
        "--queries",
        "6",
        "--steps",
        "3",
        "--database",
        "500",
        "--device",
        "cpu",
        "--quiet",
        "--gallery-queries",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "robusthash",
    ]
    two = subprocess.run(
        [*launcher, *common, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("results: ") == 1  # rank 0 alone prints
    one = subprocess.run(
        [sys.executable, "-m", "robusthash", *common, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (json.loads((tmp_path / f / "attack_results.json").read_text()) for f in ("two", "one"))
    assert a["world_size"] == 2 and b["world_size"] == 1
    for x, y in zip(a["attacks"], b["attacks"], strict=True):
        assert x["scores"]["ap"] == y["scores"]["ap"] and x["bits_flipped"] == y["bits_flipped"]
    assert not list((tmp_path / "two").glob(".*.tmp"))
