"""The model zoo: shipped checkpoints reproduce their recorded mAP, load by name, and stand in for training
exactly where the recipe matches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robusthash import metrics
from robusthash.app import zoo
from robusthash.app.experiment import DEMO, _shipped, load_experiment
from robusthash.cards import CardProtocol, measure_card, read_card, recipe_sha256
from robusthash.checkpoint import read_checkpoint
from robusthash.data import labels_of
from robusthash.defenses import DefenseConfig
from robusthash.errors import UserError
from robusthash.evaluation import encode
from robusthash.models import HashModel
from robusthash.training import TrainConfig, train
from tests.conftest import needs_fashion_mnist

NAMES = [m.name for m in zoo.list_models()]
DEMO_DATASET = {
    "name": "fashion-mnist",
    "data_dir": None,
    "database": 10_000,
    "split_seed": 0,
    "image_size": None,
}


DEFENCES = ("", "-atrdh", "-pga-at", "-cgat", "-saat")
# the defence benchmark's settings, all of which the zoo ships
BENCH_SETTINGS = (
    "fashion-mnist-dpsh-16",
    "fashion-mnist-dpsh-32",
    "fashion-mnist-dpsh-64",
    "fashion-mosaic-dpsh-32",
)


def test_the_zoo_ships_the_demo_models_and_every_defence_of_the_defence_benchmark():
    demo = [f"fashion-mnist-dph-32{d}" for d in DEFENCES if d != "-saat"]
    assert NAMES == demo + [f"{s}{d}" for s in BENCH_SETTINGS for d in DEFENCES]
    for entry in zoo.list_models():
        assert entry.path.stat().st_size == entry.bytes < 1_000_000
        assert zoo.sha256_of(entry.path) == entry.sha256
        assert entry.card_path is not None and entry.card_path.is_file()
    assert zoo.card_paths() == [m.card_path for m in zoo.list_models()]


_DATA: dict = {}


def _data(record):
    key = json.dumps(record.data_ref.options(), sort_keys=True)
    if key not in _DATA:
        _DATA[key] = record.data_ref.load()
    return _DATA[key]


# where this machine's float arithmetic differs from the measuring one's (its logits' fingerprint differs), a logit
# within rounding of zero can flip its bit: rounding of 1e-4 x the mean |logit| (~1,000 ulps) flips 5-10 bits and
# moves the mAP by up to 1.1e-4 and the mean AP change by up to 2.6e-4 (python benchmarks/bench_rounding.py)
OTHER_FLOATS_MAP = 1e-3  # mAP over 1,000 queries
OTHER_FLOATS_MEAN_AP = 2e-3  # mean |AP change| over a card's 100 queries


@needs_fashion_mnist
@pytest.mark.parametrize("name", NAMES)
def test_shipped_checkpoint_reproduces_its_recorded_map_and_its_cards_clean_ap(name):
    """The manifest's clean mAP over every query, exactly where this machine computes the measuring machine's
    logits bit for bit (their fingerprint), within rounding elsewhere; the card's clean AP of each of its queries
    to the float reordering of its channels-last convolutions (the attack suite's layout, against this test's
    NCHW: one flipped database bit of fashion-mosaic-dpsh-32-cgat moved its queries' AP by up to 2.2e-4); the card
    names this checkpoint and its recipe."""
    entry = zoo.get(name)
    ckpt = zoo.checkpoint(name)
    model = zoo.load_model(name)
    assert isinstance(model, HashModel) and not model.training
    data = _data(ckpt.record)
    same_floats = zoo.logits_fingerprint(model, data) == entry.floats_sha256
    q, db = encode(model, data.query), encode(model, data.database)
    q_labels, db_labels = labels_of(data.query), labels_of(data.database)
    got = metrics.mean_average_precision(q, db, q_labels, db_labels, entry.topk)
    assert float(got) == pytest.approx(entry.clean_map, abs=1e-6 if same_floats else OTHER_FLOATS_MAP)
    card = read_card(entry.card_path)
    assert card.name == name and card.checkpoint_sha256 == entry.sha256
    assert card.recipe_sha256 == recipe_sha256(ckpt)
    assert card.protocol == CardProtocol().record()
    picked = torch.tensor(card.query_indices)
    ap = np.asarray(
        metrics.average_precision(q[picked], db, q_labels[picked], db_labels, card.protocol["topk"])
    )
    if same_floats:
        assert ap.tolist() == pytest.approx(card.clean_ap, abs=1e-3)
    else:
        assert np.abs(ap - np.asarray(card.clean_ap)).mean() <= OTHER_FLOATS_MEAN_AP
    assert card.clean_map == pytest.approx(float(np.mean(card.clean_ap)), abs=1e-12)


@needs_fashion_mnist
def test_the_logits_fingerprint_tells_other_float_arithmetic_apart():
    """Weights scaled by 1 + 2^-20 (about 8 ulps: the size of another CPU's reordered sums) change the
    fingerprint; the same arithmetic gives the same one."""
    entry = zoo.get("fashion-mnist-dpsh-32")
    model = zoo.load_model(entry.name)
    data = _data(zoo.checkpoint(entry.name).record)
    before = zoo.logits_fingerprint(model, data)
    assert before == zoo.logits_fingerprint(model, data) and len(before) == 64
    with torch.no_grad():
        model.hash_layer.weight.mul_(1 + 2**-20)
    assert zoo.logits_fingerprint(model, data) != before


# its robust AP re-measured on a few of its card's queries (SAAT's: the defence the card issue added)
REMEASURED = ("fashion-mnist-dpsh-32-saat",)


@needs_fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("name", REMEASURED)
def test_a_cards_robust_ap_is_reproduced_on_a_subset_of_its_queries(name):
    """Each query's robust AP depends on its index and the seed alone, so a run on three of the card's queries
    reproduces their APs: exactly on the machine that measured the card; within noise on another CPU, where
    float reordering can move an attack's path (tolerance: 0.1 AP on the mean of three queries; another seed moved
    the mean of three of this card's queries by up to 0.073)."""
    entry = zoo.get(name)
    card = read_card(entry.card_path)
    ckpt = zoo.checkpoint(name)
    picks = [0, len(card.query_indices) // 2, len(card.query_indices) - 1]
    indices = torch.tensor([card.query_indices[i] for i in picks])
    again = measure_card(name, ckpt.build_model(), ckpt, _data(ckpt.record), quiet=True, indices=indices)
    assert again.query_indices == indices.tolist()
    assert again.clean_ap == pytest.approx([card.clean_ap[i] for i in picks], abs=1e-9)
    want = [card.robust_ap[i] for i in picks]
    assert np.mean(again.robust_ap) == pytest.approx(np.mean(want), abs=0.1)


def test_unknown_zoo_model_is_named():
    with pytest.raises(UserError, match="unknown zoo model 'nope'; valid: fashion-mnist-dph-32"):
        zoo.load_model("nope")


def test_find_matches_the_exact_recipe_only():
    exp = load_experiment(DEMO)
    assert zoo.find(exp.train, DEMO_DATASET).name == "fashion-mnist-dph-32"
    cgat = DefenseConfig(**{**exp.defend.__dict__, "method": "cgat"})
    assert zoo.find(exp.train, DEMO_DATASET, cgat).name == "fashion-mnist-dph-32-cgat"
    assert zoo.find(TrainConfig(**{**exp.train.__dict__, "bits": 16}), DEMO_DATASET) is None
    assert zoo.find(exp.train, {**DEMO_DATASET, "split_seed": 1}) is None
    assert (
        zoo.find(exp.train, DEMO_DATASET, DefenseConfig(**{**cgat.__dict__, "method_options": {"lam": 2.0}}))
        is None
    )


@needs_fashion_mnist
def test_a_shipped_copy_is_a_finished_run_and_from_scratch_removes_it(tmp_path, fmnist):
    exp = load_experiment(DEMO)
    path = tmp_path / "model.pt"
    assert _shipped(path, exp, from_scratch=False) == "fashion-mnist-dph-32"
    assert zoo.is_shipped_copy(path)
    # training into the copy resumes a finished run: no step is taken, the weights are the zoo's
    result = train(fmnist, exp.train, path, "cpu", dataset_options=exp.dataset, quiet=True)
    shipped = zoo.checkpoint("fashion-mnist-dph-32").state["model"]
    assert all(torch.equal(v, shipped[k]) for k, v in result.model.state_dict().items())
    assert read_checkpoint(path).meta["kind"] == "trained"
    assert _shipped(path, exp, from_scratch=True) is None and not path.exists()


def test_the_facade_loads_any_model_and_stays_light(tmp_path):
    import subprocess
    import sys

    import robusthash as rh

    model = rh.load_model("fashion-mnist-dph-32")
    assert model.bits == 32 and not model.training
    from_file = rh.load_model(str(zoo.get("fashion-mnist-dph-32").path))  # a checkpoint file
    assert torch.equal(from_file.hash_layer.weight, model.hash_layer.weight)
    path = tmp_path / "m.py"
    path.write_text(
        "import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), "
        "torch.nn.Linear(784, 12))\n"
    )
    assert rh.load_model(f"{path}:make", image_shape=(1, 28, 28)).bits == 12
    with pytest.raises(rh.UserError, match="no model 'nothing': give a zoo name"):
        rh.load_model("nothing")
    assert rh.AttackSuite is __import__("robusthash.robustness", fromlist=["x"]).AttackSuite
    assert all(getattr(rh, name) is not None for name in rh.__all__)  # every façade name resolves
    code = "import sys, robusthash\nprint('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )


def test_the_command_line_takes_a_zoo_name_as_model(tmp_path, monkeypatch):
    from robusthash.app.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", "fashion-mnist-dph-32", "--quiet"]) == 0
    from robusthash.results import load_results

    run = load_results(tmp_path / "fashion-mnist-dph-32.eval.json")  # beside the name, not in the package
    assert run.clean.map == pytest.approx(zoo.get("fashion-mnist-dph-32").clean_map, abs=1e-3)
