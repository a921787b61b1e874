"""Bring your own model and your own attack: a plain nn.Module is trained, attacked by every attack, defended by
CgAT and reported, through the Python API and through ``--model-def``; a throw-away attack defined here runs
through the CLI and the report; the CLI's per-query results do not depend on ``--batch-size``; foreign state
dicts load; transfer attacks never differentiate the victim."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch
from torch import nn

from robusthash.app import cli
from robusthash.app.report.build import build_report
from robusthash.attacks import ATTACKS, Attack, list_attacks, register_attack
from robusthash.checkpoint import read_checkpoint
from robusthash.defenses import DefenseConfig, defend
from robusthash.errors import UserError
from robusthash.models import create_model, load_foreign_state_dict, wrap_model
from robusthash.records import DatasetRef
from robusthash.results import load_results
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.training import TrainConfig, train
from tests.test_training import toy_data

MODEL_FILE = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 12))
"""


def _plain_module() -> nn.Module:
    namespace: dict = {}
    exec(MODEL_FILE, namespace)  # noqa: S102 - our own test source
    return namespace["make"]()


@pytest.fixture(scope="module")
def brought(tmp_path_factory):
    """A plain nn.Module (not a HashModel), wrapped and trained on the toy data."""
    data = toy_data(n_per_class=30)
    folder = tmp_path_factory.mktemp("byo")
    model = wrap_model(_plain_module(), output="preactivation", image_shape=data.image_shape)
    config = TrainConfig(bits=12, loss="dph", epochs=3, batch_size=16, lr=3e-3)
    train(data, config, folder / "plain.pt", model=model, quiet=True)
    (folder / "plain_model.py").write_text(MODEL_FILE)
    return data, model, folder


def test_plain_module_is_attacked_by_every_attack_defended_and_reported(brought, tmp_path):
    data, model, folder = brought
    suite = AttackSuite(
        attacks=list_attacks(),
        protocol="pgd20",
        steps=5,
        queries=12,
        eps=16 / 255,
        attack_options={"tha": {"prototype_steps": 50}, "prosgan": {"epochs": 1, "prototype_steps": 20}},
    )
    run = evaluate_attacks(model, data, suite, quiet=True, surrogates={"self": model})
    names = [n + "@self" if ATTACKS.get(n).threat_model == "transfer" else n for n in list_attacks()]
    assert run.attack_names == names and run.robust_map <= run.clean.map
    ckpt = read_checkpoint(folder / "plain.pt")
    assert ckpt.meta["model"]["external"]
    defended = defend(
        ckpt,
        data,
        DefenseConfig(method="cgat", epochs=1, batch_size=16),
        tmp_path / "d.pt",
        model=model,
        quiet=True,
    )
    run = evaluate_attacks(
        defended.model, data, AttackSuite(attacks=["pga"], protocol="pgd20", queries=12), quiet=True
    )
    page = build_report([run.write(tmp_path / "r.json")], tmp_path / "rep").read_text()
    assert "PgA" in page and "Retrieval gallery" in page


def test_wrap_model_names_a_wrong_output_shape():
    with pytest.raises(UserError, match=r"shape \(N, K\).*\(2, 3, 4, 4\)"):
        wrap_model(nn.Conv2d(1, 3, 1), image_shape=(1, 4, 4))
    with pytest.raises(UserError, match="output must be one of"):
        wrap_model(nn.Flatten(), output="logits", image_shape=(1, 2, 2))


@pytest.fixture()
def toy_cli(brought, monkeypatch):
    data, _, folder = brought
    monkeypatch.setattr(DatasetRef, "load", lambda self: data)
    return folder


def _cli(*argv: str) -> None:
    extra = [] if argv[0] == "report" else ["--quiet", "--device", "cpu"]
    assert cli.main([*argv, *extra]) == 0


def test_model_def_through_the_command_line(toy_cli, tmp_path):
    model_def = f"{toy_cli / 'plain_model.py'}:make"
    ckpt = str(toy_cli / "plain.pt")
    _cli(
        "attack",
        "--model",
        ckpt,
        "--model-def",
        model_def,
        "--attack",
        "pga,p2p",
        "--steps",
        "3",
        "--queries",
        "8",
        "--out",
        str(tmp_path / "a"),
    )
    # the report names a brought model as yours, not by a hashing loss it was never trained with here
    described = load_results(tmp_path / "a" / "attack_results.json").describe()
    assert described.startswith("your model Sequential / 12 bits") and "dph" not in described
    _cli(
        "defend",
        "--model",
        ckpt,
        "--model-def",
        model_def,
        "--method",
        "cgat",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        str(tmp_path / "d.pt"),
    )
    record = load_results(tmp_path / "d.json")  # the typed record of the defence run
    assert record.kind == "defense" and record.method == "cgat" and len(record.base_fingerprint) == 16
    assert len(record.history) == 1 and len(record.clean.ap) == 30  # the toy query split: 10 per class
    _cli(
        "attack",
        "--model",
        str(tmp_path / "d.pt"),
        "--model-def",
        model_def,
        "--attack",
        "pga",
        "--steps",
        "3",
        "--queries",
        "8",
        "--out",
        str(tmp_path / "b"),
    )
    _cli(
        "report",
        str(tmp_path / "a" / "attack_results.json"),
        str(tmp_path / "b" / "attack_results.json"),
        "--out",
        str(tmp_path / "rep"),
    )
    assert "CgAT" in (tmp_path / "rep" / "index.html").read_text()
    state = {
        k.removeprefix("module."): v
        for k, v in read_checkpoint(ckpt).state["model"].items()
        if k.startswith("module.")
    }  # a bare state dict of the user's module
    torch.save(state, tmp_path / "bare.pt")
    _cli(
        "evaluate",
        "--model",
        str(tmp_path / "bare.pt"),
        "--model-def",
        model_def,
        "--out",
        str(tmp_path / "e.json"),
    )
    assert load_results(tmp_path / "e.json").clean.map == pytest.approx(
        load_results(tmp_path / "a" / "attack_results.json").clean.map, abs=0.2
    )  # 8 queries against all


@register_attack
class _NoiseAttack(Attack):
    """A throw-away attack defined in a test file: signed uniform noise of size eps, drawn per query."""

    name: ClassVar[str] = "test-noise"
    display_name: ClassVar[str] = "Noise (test)"
    test_options: ClassVar[dict] = {}

    def perturb(self, x, labels, targets, indices):
        noise = torch.stack(
            [torch.rand(x.shape[1:], generator=self.generator(int(i), "noise")) for i in indices]
        )
        return x + self.eps * (noise * 2 - 1).sign().to(x.device)


@pytest.fixture()
def noise_registered():
    yield
    ATTACKS.unregister("test-noise")
    ATTACKS.register(_NoiseAttack)


def test_a_throwaway_attack_runs_through_the_cli_and_the_report(toy_cli, tmp_path, noise_registered):
    ckpt = str(toy_cli / "plain.pt")
    model_def = f"{toy_cli / 'plain_model.py'}:make"
    _cli(
        "attack",
        "--model",
        ckpt,
        "--model-def",
        model_def,
        "--attack",
        "test-noise,pga",
        "--steps",
        "2",
        "--queries",
        "6",
        "--out",
        str(tmp_path / "a"),
    )
    _cli("report", str(tmp_path / "a" / "attack_results.json"), "--out", str(tmp_path / "rep"))
    assert "Noise (test)" in (tmp_path / "rep" / "index.html").read_text()


def test_cli_per_query_ap_does_not_depend_on_batch_size(toy_cli, tmp_path):
    ckpt = str(toy_cli / "plain.pt")
    model_def = f"{toy_cli / 'plain_model.py'}:make"
    names = [n for n in list_attacks() if n != "test-noise" and ATTACKS.get(n).threat_model == "white-box"]
    aps = {}
    for batch in (1, 50):
        out = tmp_path / f"b{batch}"
        _cli(
            "attack",
            "--model",
            ckpt,
            "--model-def",
            model_def,
            "--attack",
            ",".join(names),
            "--queries",
            "20",
            "--steps",
            "5",
            "--batch-size",
            str(batch),
            "--attack-options",
            '{"tha": {"prototype_steps": 30}, "prosgan": {"epochs": 1, "prototype_steps": 20}}',
            "--out",
            str(out),
        )
        doc = json.loads((out / "attack_results.json").read_text())
        aps[batch] = {a["name"]: a["scores"]["ap"] for a in doc["attacks"]}
    assert set(aps[1]) == set(names) and aps[1] == aps[50]


class _Transfer(Attack):
    name: ClassVar[str] = "test-transfer"
    threat_model: ClassVar[str] = "transfer"
    crafted_on: ClassVar[list] = []

    def perturb(self, x, labels, targets, indices):
        _Transfer.crafted_on.append(self.model)
        x = x.clone().requires_grad_(True)
        self.model.preactivation(x).sum().backward()
        return x + self.eps * x.grad.sign()


def test_transfer_attacks_craft_on_surrogates_and_never_touch_the_victim(brought):
    data, victim, _ = brought
    surrogate = create_model("small_cnn", victim.bits, 1, image_size=12)
    ATTACKS.register(_Transfer)
    try:
        params = list(victim.parameters())
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        with pytest.raises(UserError, match="surrogate"):
            evaluate_attacks(victim, data, AttackSuite(attacks=["test-transfer"], queries=4), quiet=True)
        suite = AttackSuite(attacks=["test-transfer", "nag", "pga"], steps=1, queries=4)
        run = evaluate_attacks(victim, data, suite, quiet=True, surrogates={"cnn": surrogate})
        assert all(m.inner is surrogate for m in _Transfer.crafted_on)  # in its fixed-row wrapper
        assert all(p.grad is None for p in params)  # the victim was never differentiated by a transfer attack
        assert run.attack_names == ["test-transfer@cnn", "nag@cnn", "pga"]
        assert [a.threat_model for a in run.attacks] == ["transfer", "transfer", "white-box"]
    finally:
        ATTACKS.unregister("test-transfer")


def _rename(state, rename):
    out = {}
    for key, value in state.items():
        for old, new in rename.items():
            if key.startswith(old):
                out[new + key[len(old) :]] = value
                break
    return out


NAMED_RESNET = {"backbone.": "", "hash_layer.": "hash_layer."}
RESNET_FEATURE_LAYERS = {
    "backbone.conv1.": "feature_layers.0.",
    "backbone.bn1.": "feature_layers.1.",
    **{f"backbone.layer{i}.": f"feature_layers.{i + 3}." for i in range(1, 5)},
    "hash_layer.": "hash_layer.",
}
LAYOUTS = {  # robusthash key prefix -> the public code's (see robusthash.models.external for the sources)
    ("alexnet", "deephash"): [
        {
            "backbone.0.": "features.",
            "backbone.4.": "hash_layer.1.",
            "backbone.7.": "hash_layer.4.",
            "hash_layer.": "hash_layer.6.",
        }
    ],
    ("alexnet", "cgat"): [
        {
            "backbone.0.": "features.",
            "backbone.4.": "classifier.1.",
            "backbone.7.": "classifier.4.",
            "hash_layer.": "classifier.6.",
        }
    ],
    ("alexnet", "hashnet-fc"): [
        {
            "backbone.0.": "features.",
            "backbone.4.": "classifier.classifier1.",
            "backbone.7.": "classifier.classifier4.",
            "hash_layer.": "hash_layer.",
        }
    ],
    ("resnet18", "resnet-named"): [
        NAMED_RESNET,
        RESNET_FEATURE_LAYERS,
    ],  # both key sets, as the repos save them
    ("resnet18", "resnet-feature-layers"): [RESNET_FEATURE_LAYERS],
}


@pytest.mark.parametrize(("backbone", "layout"), list(LAYOUTS))
def test_foreign_state_dicts_load_into_the_same_backbone(backbone, layout):
    torch.manual_seed(0)
    source = create_model(backbone, 16, 3, image_size=64).eval()
    weights = {k: v for k, v in source.state_dict().items() if k not in ("mean", "std")}
    foreign = {k: v for rename in LAYOUTS[(backbone, layout)] for k, v in _rename(weights, rename).items()}
    target = create_model(backbone, 16, 3, image_size=64).eval()
    assert load_foreign_state_dict(target, foreign, backbone) == layout
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(target.preactivation(x), source.preactivation(x))
    with pytest.raises(UserError, match="fits no known layout"):
        load_foreign_state_dict(target, {"hash_layer.weight": torch.zeros(16, 4)}, backbone)


def test_a_bare_state_dict_of_a_known_backbone_through_the_command_line(toy_cli, brought, tmp_path):
    data, _, _ = brought
    model = train(data, TrainConfig(bits=8, epochs=1, batch_size=16), quiet=True).model
    torch.save(model.state_dict(), tmp_path / "weights.pt")  # a plain state dict, no robusthash metadata
    _cli(
        "attack",
        "--model",
        str(tmp_path / "weights.pt"),
        "--backbone",
        "small_cnn",
        "--bits",
        "8",
        "--attack",
        "pga",
        "--steps",
        "2",
        "--queries",
        "5",
        "--out",
        str(tmp_path / "a"),
    )
    assert load_results(tmp_path / "a" / "attack_results.json").model["model"]["bits"] == 8
    assert (
        cli.main(["attack", "--model", str(tmp_path / "weights.pt"), "--backbone", "small_cnn", "--quiet"])
        == 2
    )


def test_an_interrupted_attack_command_resumes(toy_cli, tmp_path, monkeypatch, capsys):
    """Ctrl-C during ``robusthash attack``: exit 130, the finished shards stay; the rerun crafts the rest and
    writes the uninterrupted run's per-query AP."""
    from robusthash import robustness

    args = [
        "attack",
        "--model",
        str(toy_cli / "plain.pt"),
        "--model-def",
        f"{toy_cli / 'plain_model.py'}:make",
        "--attack",
        "pga",
        "--steps",
        "3",
        "--queries",
        "12",
        "--batch-size",
        "4",
    ]
    _cli(*args, "--out", str(tmp_path / "whole"))
    real_craft, calls = robustness.craft, []

    def interrupted(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real_craft(*a, **k)

    monkeypatch.setattr(robustness, "craft", interrupted)
    assert cli.main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 130
    assert "resume when rerun" in capsys.readouterr().err
    assert len(list((tmp_path / "out" / "crafted").glob("pga-*.pt"))) == 2
    monkeypatch.setattr(robustness, "craft", real_craft)
    _cli(*args, "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "crafted").exists()
    a, b = (load_results(tmp_path / d / "attack_results.json") for d in ("whole", "out"))
    assert a.attack("pga").scores.ap == b.attack("pga").scores.ap
