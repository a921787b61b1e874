"""``robusthash demo`` / ``run`` end to end on a toy problem: every stage runs, the table is printed, the report is
written, and a rerun reuses every finished stage."""

from __future__ import annotations

import json

from robusthash.app import experiment
from robusthash.records import DatasetRef
from robusthash.results import ExperimentRun, load_results
from tests.test_training import toy_data

TOY_EXPERIMENT = """
name = "toy"
seed = 0
[dataset]
name = "toy"
[train]
bits = 8
epochs = 2
lr = 3e-3
batch_size = 16
[attack]
attacks = ["p2p", "pga"]
protocol = "pgd20"
topk = 1000
[defend]
methods = ["atrdh", "pga-at", "cgat"]
epochs = 1
batch_size = 16
"""


def test_experiment_trains_attacks_defends_and_writes_the_report(tmp_path, monkeypatch, capsys):
    toy = toy_data(n_per_class=20)
    monkeypatch.setattr(DatasetRef, "load", lambda self: toy)
    path = tmp_path / "toy.toml"
    path.write_text(TOY_EXPERIMENT)
    out = tmp_path / "out"
    experiment.run_experiment(path, out, device_name="cpu", quiet=True)
    printed = capsys.readouterr().out
    for row in ("| undefended |", "| ATRDH |", "| PgA-AT |", "| CgAT |"):
        assert row in printed
    assert "writing the report" in printed
    html = (out / "report" / "index.html").read_text()
    assert "Defences" in html and "Retrieval gallery" in html
    assert (out / "report" / "figures" / "gallery.png").stat().st_size > 0
    result = load_results(out / "results.json")
    assert isinstance(result, ExperimentRun) and [r.label for r in result.rows] == [
        "undefended",
        "ATRDH",
        "PgA-AT",
        "CgAT",
    ]
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["train"]["bits"] == 8 and resolved["train"]["loss"] == "dph"  # defaults filled in
    for row in result.rows:
        run = load_results(out / row.results)
        assert 0.0 <= run.robust_map <= run.attack("pga").map <= 1.0
    stamp = (out / "attacks-cgat.json").stat().st_mtime_ns
    experiment.run_experiment(path, out, device_name="cpu", quiet=True)  # resumes: nothing recomputed
    assert (out / "attacks-cgat.json").stat().st_mtime_ns == stamp


def test_the_shipped_demo_file_is_valid():
    exp = experiment.load_experiment(experiment.DEMO)
    assert exp.train.loss == "dph" and exp.train.bits == 32 and exp.methods == ["atrdh", "pga-at", "cgat"]
    assert exp.attack.protocol == "pgd20" and exp.attack.attacks == ["p2p", "dhta", "hag", "sdha", "pga"]


def test_an_interrupted_attack_stage_resumes_from_its_crafted_shards(tmp_path, monkeypatch):
    """Ctrl-C in the attack stage of ``run`` (and so of ``demo``) keeps the shards crafted so far; the rerun
    crafts only the rest, gives the uninterrupted per-query AP, and removes the shards once the results exist."""
    import pytest

    from robusthash import robustness

    toy = toy_data(n_per_class=20)
    monkeypatch.setattr(DatasetRef, "load", lambda self: toy)
    path = tmp_path / "toy.toml"
    path.write_text(
        TOY_EXPERIMENT.split("[defend]")[0].replace(
            'protocol = "pgd20"', 'protocol = "pgd20"\nbatch_size = 8'
        )
    )
    experiment.run_experiment(path, tmp_path / "whole", device_name="cpu", quiet=True)
    real_craft, calls = robustness.craft, []

    def counted(*args, **kwargs):
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt
        calls.append(args[0].name)
        return real_craft(*args, **kwargs)

    monkeypatch.setattr(robustness, "craft", counted)
    out, interrupt = tmp_path / "out", True
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(path, out, device_name="cpu", quiet=True)
    assert len(list((out / "attacks-none.crafted").glob("*.pt"))) == 2
    calls.clear()
    interrupt = False
    experiment.run_experiment(path, out, device_name="cpu", quiet=True)
    shards = -(-len(toy.query) // 8)
    assert len(calls) == 2 * shards - 2 and not (out / "attacks-none.crafted").exists()
    a, b = load_results(tmp_path / "whole" / "attacks-none.json"), load_results(out / "attacks-none.json")
    assert [x.scores.ap for x in a.attacks] == [x.scores.ap for x in b.attacks] and a.robust_ap == b.robust_ap
