"""Model cards and the leaderboard: the card's numbers come from its run (transfer kept apart), its file is
checked against the schema, and the leaderboard ranks only cards of one protocol within one group."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from robusthash import cards
from robusthash.app.cli import main
from robusthash.app.report.leaderboard import board_rows, boards, card_markdown, leaderboard_markdown
from robusthash.checkpoint import Checkpoint
from robusthash.errors import UserError
from robusthash.records import ModelRecord
from robusthash.results import AttackOutcome, ModelCard, RobustnessRun, Scores


def _record(bits: int = 32, defense: str | None = None, dataset: str = "fashion-mnist") -> ModelRecord:
    return ModelRecord(
        kind="defended" if defense else "trained",
        model={"backbone": "small_cnn", "bits": bits},
        train={"loss": "dpsh", "backbone": "small_cnn", "bits": bits, "epochs": 20},
        dataset={"name": dataset},
        defense={"method": defense, "config": {"method": defense}} if defense else None,
        history=[{"epoch": 1, "seconds": 2.5}, {"epoch": 2, "seconds": 1.5}],
    )


def _outcome(
    name: str, ap: list[float], threat: str = "white-box", surrogate: str | None = None
) -> AttackOutcome:
    n = len(ap)
    return AttackOutcome(
        name=name if surrogate is None else f"{name}@{surrogate}",
        display_name=name,
        settings={},
        threat_model=threat,
        targeted=False,
        scores=Scores(float(np.mean(ap)), 1000, ap),
        seconds=2.0 * n,
        bits_flipped=[1.0] * n,
        linf=[8 / 255] * n,
        l2=[0.5] * n,
        surrogate=surrogate,
    )


def _run(clean: list[float], attacks: list[AttackOutcome]) -> RobustnessRun:
    return RobustnessRun(
        config={},
        seed=0,
        environment={"robusthash": "0.1.0", "torch": "x", "device": "cpu"},
        created="now",
        model=_record().summary(),
        query_indices=list(range(10, 10 + len(clean))),
        clean=Scores(float(np.mean(clean)), 1000, clean),
        attacks=attacks,
    )


def _card(name: str = "m", robust: float = 0.5, clean: float = 0.8, protocol=None, **record) -> ModelCard:
    ckpt = Checkpoint(path="none.pt", record=_record(**record), state={})
    run = _run([clean] * 4, [_outcome("cascade", [robust] * 4)])
    return cards.card_of(run, name, ckpt, protocol or cards.CardProtocol(), seconds=3.0)


def test_card_robust_ap_is_the_per_query_minimum_over_the_ranked_attacks_only():
    ckpt = Checkpoint(path="none.pt", record=_record(defense="cgat"), state={})
    cascade = _outcome("cascade", [0.5, 0.2, 0.9])
    pga = _outcome("pga", [0.4, 0.3, 0.95])
    nag = _outcome("nag", [0.0, 0.0, 0.0], threat="transfer", surrogate="base")
    card = cards.card_of(_run([0.9, 0.8, 1.0], [cascade, pga, nag]), "m", ckpt, cards.CardProtocol(), 7.0)
    want = [min(a, b) for a, b in zip(cascade.scores.ap, pga.scores.ap, strict=True)]  # nag is not counted
    assert card.robust_ap == want and card.robust_map == pytest.approx(sum(want) / 3)
    assert card.clean_map == pytest.approx(0.9) and card.query_indices == [10, 11, 12]
    assert card.training_seconds == pytest.approx(4.0)  # the recorded epochs
    assert card.config["surrogates"] == ["base"] and card.bound == "upper"
    assert [a.threat_model for a in card.attacks] == ["white-box", "white-box", "transfer"]
    assert "not counted in the robust mAP" in card_markdown(card)
    assert "may be blocked" in card_markdown(card)  # the transfer attack went below the white-box worst case


def test_schema_lists_every_card_field_and_a_card_round_trips(tmp_path):
    assert set(cards.schema()["properties"]) == set(cards.card_fields())
    assert set(cards.schema()["required"]) == set(cards.card_fields())
    card = _card()
    path = card.write(tmp_path / "card.json")
    cards.validate(json.loads(path.read_text()))
    again = cards.read_card(path)
    assert again == card


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(robust_map="high"), r"card\.robust_map must be number"),
        (lambda d: d.pop("protocol"), "lacks the field 'protocol'"),
        (lambda d: d.update(extra=1), r"unknown field\(s\) extra"),
        (lambda d: d["protocol"].update(queries=0), r"protocol\.queries must be >= 1"),
        (lambda d: d["clean_ap"].append(0.5), "clean_ap has 5 entries for 4 queries"),
        (lambda d: d.update(robust_map=0.1), "robust_map 0.1 is not the mean of robust_ap"),
        (lambda d: d["attacks"][0].update(map=1.5), r"card\.attacks\[0\]\.map must be <= 1"),
        (lambda d: d.update(kind="robustness"), r"card\.kind must be 'card'"),
    ],
)
def test_a_damaged_card_is_refused_naming_the_field(change, message):
    doc = _card().to_json()
    change(doc)
    with pytest.raises(UserError, match=message):
        cards.validate(doc)


def test_leaderboard_ranks_by_robust_map_within_a_group_and_sets_other_protocols_apart():
    a = _card("a", robust=0.6, defense="cgat")
    b = _card("b", robust=0.7, defense="saat")
    c = _card("c", robust=0.3)
    tie = _card("tie", robust=0.6, clean=0.9, defense="atrdh")
    other_bits = _card("d", robust=0.9, bits=16)
    other_protocol = _card("e", robust=0.95, protocol=cards.CardProtocol(queries=50), defense="pga-at")
    got = boards([a, b, c, tie, other_bits, other_protocol, a])  # a twice: counted once
    assert [(x.bits, x.ranked, [card.name for card in x.cards]) for x in got] == [
        (16, True, ["d"]),
        (32, True, ["b", "tie", "a", "c"]),  # ties by clean mAP
        (32, False, ["e"]),
    ]
    assert "queries 50 instead of 100" in got[2].title and "not ranked" in got[2].title
    assert [r[0] for r in board_rows(got[1])] == ["1", "2", "3", "4"]
    assert board_rows(got[2])[0][0] == ""  # no rank on a board of another protocol
    text = leaderboard_markdown([a, b, c])
    assert text.index("| 1 | b |") < text.index("| 2 | a |") < text.index("| 3 | c |")


def test_a_group_without_the_default_protocol_ranks_its_most_common_one():
    p = cards.CardProtocol(queries=20)
    got = boards(
        [
            _card("x", protocol=p),
            _card("y", protocol=p, robust=0.7),
            _card("z", robust=0.1, protocol=replace(p, seed=3)),
        ]
    )
    assert [(b.ranked, [c.name for c in b.cards]) for b in got] == [(True, ["y", "x"]), (False, ["z"])]


def test_leaderboard_command_ranks_given_cards_and_refuses_a_damaged_one(tmp_path, capsys):
    good = _card("mine", robust=0.42).write(tmp_path / "mine.json")
    assert main(["leaderboard", str(good), "--no-zoo", "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| 1 | mine | undefended | DPSH / small_cnn | 0.8000 | 0.4200 | 38.0 | none |" in out
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Leaderboard" in html and "mine" in html
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_card().to_json(), "robust_ap": [2.0] * 4}))
    assert main(["leaderboard", str(bad), "--no-zoo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "robust_ap[0] must be <= 1" in err
    assert main(["leaderboard", "--no-zoo"]) == 2


@pytest.mark.slow
def test_an_experiment_file_writes_a_card_of_every_model_and_ranks_them_in_its_report(tmp_path, monkeypatch):
    from robusthash.app import experiment as experiment_module
    from robusthash.app import zoo
    from robusthash.app.experiment import load_experiment, run_experiment

    path = tmp_path / "exp.toml"
    path.write_text(
        f'[model]\ncheckpoint = "{zoo.get("fashion-mnist-dph-32").path}"\n'
        '[attack]\nattacks = ["pga"]\nqueries = 2\nsteps = 2\n[card]\nqueries = 1\n'
    )
    assert load_experiment(path).resolved()["card"] == cards.CardProtocol(queries=1).record()
    result = run_experiment(path, tmp_path / "out", quiet=True, device_name="cpu")
    assert result.cards == ["card-none.json"]
    card = cards.read_card(tmp_path / "out" / "card-none.json")
    assert card.protocol["queries"] == 1 and card.name == "exp-none" and len(card.robust_ap) == 1
    assert card.checkpoint_sha256 == zoo.get("fashion-mnist-dph-32").sha256
    assert (tmp_path / "out" / "card-none.md").is_file()
    assert "Leaderboard" in (tmp_path / "out" / "report" / "index.html").read_text()
    monkeypatch.setattr(experiment_module, "measure_card", None)  # a rerun keeps the card: nothing measured
    assert run_experiment(path, tmp_path / "out", quiet=True, device_name="cpu").cards == ["card-none.json"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[card]\nqueries = 0\n")
    with pytest.raises(UserError, match=r"\[card\]: a card needs at least 1 query"):
        load_experiment(bad)
    bad.write_text("[card]\neps = 4\n")
    with pytest.raises(UserError, match=r"\[card\]"):
        load_experiment(bad)


@pytest.mark.slow
def test_benchmark_command_writes_a_valid_card_and_refuses_bad_settings(tmp_path, capsys):
    out = tmp_path / "m-card.json"
    assert (
        main(["benchmark", "--model", "fashion-mnist-dph-32", "--queries", "1", "--out", str(out), "--quiet"])
        == 0
    )
    card = cards.read_card(out)  # validated against the schema
    assert card.name == "fashion-mnist-dph-32" and card.protocol == cards.CardProtocol(queries=1).record()
    assert out.with_suffix(".md").read_text().startswith("## fashion-mnist-dph-32")
    assert "card: " in capsys.readouterr().out
    assert main(["benchmark", "--model", "fashion-mnist-dph-32", "--queries", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a card needs at least 1 query" in err


def test_the_recipe_hash_ignores_fields_at_their_defaults():
    """A config field added later at a default that keeps the earlier behaviour must not change the hash of an
    earlier model's recipe; a field that differs from its default must."""
    from dataclasses import asdict

    from robusthash.defenses import DefenseConfig

    def ckpt(defense: dict) -> Checkpoint:
        record = replace(
            _record(defense="cgat"), defense={"method": "cgat", "config": defense, "base_fingerprint": "x"}
        )
        return Checkpoint(path="none.pt", record=record, state={})

    full = asdict(DefenseConfig(method="cgat"))
    older = {
        k: v for k, v in full.items() if k not in ("carry", "replays", "precision")
    }  # written before those
    assert cards.recipe_sha256(ckpt(full)) == cards.recipe_sha256(ckpt(older))
    assert cards.recipe_sha256(ckpt({**full, "carry": True})) != cards.recipe_sha256(ckpt(full))
    assert cards.recipe_sha256(ckpt({**full, "method_options": {"lam": 2.0}})) != cards.recipe_sha256(
        ckpt(full)
    )


def test_a_field_added_to_the_config_later_leaves_earlier_recipe_hashes_alone(monkeypatch):
    from dataclasses import asdict, dataclass

    import robusthash.defenses
    from robusthash import config
    from robusthash.config import option
    from robusthash.defenses import DefenseConfig

    record = replace(
        _record(defense="cgat"),
        defense={"method": "cgat", "config": asdict(DefenseConfig(method="cgat")), "base_fingerprint": "x"},
    )
    ckpt = Checkpoint(path="none.pt", record=record, state={})
    before = cards.recipe_sha256(ckpt)

    @dataclass
    class Later(DefenseConfig):
        future: int = option(0, "a field a later version adds, at the earlier behaviour")

    monkeypatch.setitem(config.RECORDED, "defense", Later)
    monkeypatch.setattr(robusthash.defenses, "DefenseConfig", Later)
    assert "future" in ckpt.record.recipe()["defense"]  # the restored recipe has the new field...
    assert cards.recipe_sha256(ckpt) == before  # ...at its default, which the hash leaves out
