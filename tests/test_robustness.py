"""Run, then score: crafted shards merge into the whole; the robust mAP is the per-query worst case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robusthash.attacks import ATTACKS, create_attack
from robusthash.evaluation import encode_images
from robusthash.robustness import AttackSuite, Banks, craft, evaluate_attacks, merge, query_images, score


@pytest.mark.parametrize("name", ["pga", "dhta"])
def test_two_disjoint_shards_merge_into_the_whole(name, toy):
    data, model = toy
    banks = Banks.of(model, data, torch.device("cpu"))
    indices = torch.arange(len(data.query))
    images, labels = query_images(data, indices)

    def run(sel):
        attack = create_attack(
            name,
            model,
            reference=banks.reference,
            database=banks.database,
            eps=32 / 255,
            seed=2,
            **ATTACKS.get(name).test_options,
        ).fit()
        return craft(attack, model, images[sel], labels[sel], indices[sel], torch.device("cpu"))

    whole = run(indices)
    odd, even = indices[1::2], indices[::2]
    merged = merge([run(odd), run(even)])
    assert torch.equal(merged.indices, whole.indices) and torch.equal(merged.codes, whole.codes)
    assert torch.equal(merged.targets, whole.targets) if whole.targets is not None else merged.targets is None
    clean = encode_images(model, images)
    a = score(merged, clean, labels, banks.database, None)
    b = score(whole, clean, labels, banks.database, None)
    assert a.scores.ap == b.scores.ap and a.tap == b.tap and a.bits_flipped == b.bits_flipped
    with pytest.raises(ValueError, match="overlap"):
        merge([run(odd), run(odd)])


def test_robust_map_is_the_per_query_minimum_and_never_above_any_attack(toy):
    data, model = toy
    suite = AttackSuite(attacks=["pga", "p2p", "hag"], protocol="pgd20", eps=16 / 255, topk=None)
    run = evaluate_attacks(model, data, suite, quiet=True)
    stacked = np.stack([a.scores.ap for a in run.attacks])
    assert run.robust_ap == stacked.min(0).tolist()
    assert all(run.robust_map <= a.map for a in run.attacks)
    assert run.attack("p2p").tmap is not None and len(run.attack("p2p").tap) == len(run.query_indices)
    shard = evaluate_attacks(model, data, suite, quiet=True, indices=torch.arange(5, 12))
    assert shard.query_indices == list(range(5, 12))
    assert shard.attack("pga").scores.ap == run.attack("pga").scores.ap[5:12]


def test_an_interrupted_run_resumes_from_its_shards_with_the_uninterrupted_per_query_ap(
    toy, tmp_path, monkeypatch
):
    """Shards crafted before an interrupt are loaded, not crafted again, and the result equals an uninterrupted
    run's per query (AP, codes, norms, cascade stages); a shard of other settings is never reused."""
    import robusthash.robustness as robustness

    data, model = toy
    suite = AttackSuite(
        attacks=["cascade", "pga"],
        protocol="pgd20",
        eps=16 / 255,
        topk=None,
        batch_size=8,
        attack_options={"cascade": {"steps": 4, "square_budget": 10}},
        gallery_queries=2,
    )
    whole = evaluate_attacks(model, data, suite, quiet=True)
    real_craft, calls = robustness.craft, []
    shards = -(-len(data.query) // 8)

    def interrupted(*args, **kwargs):
        if len(calls) == shards:  # the cascade's shards are done; interrupt PgA's first
            raise KeyboardInterrupt
        calls.append(args[0].name)
        return real_craft(*args, **kwargs)

    monkeypatch.setattr(robustness, "craft", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_attacks(model, data, suite, quiet=True, resume=tmp_path)
    assert calls == ["cascade"] * shards and len(list(tmp_path.glob("cascade-*.pt"))) == shards > 1
    calls.clear()
    monkeypatch.setattr(
        robustness, "craft", lambda *a, **k: (calls.append(a[0].name), real_craft(*a, **k))[1]
    )
    resumed = evaluate_attacks(model, data, suite, quiet=True, resume=tmp_path)
    assert calls == ["pga"] * shards  # only PgA's shards are crafted
    for a, b in zip(whole.attacks, resumed.attacks, strict=True):
        assert a.scores.ap == b.scores.ap and a.bits_flipped == b.bits_flipped and a.linf == b.linf
        assert a.stages == b.stages
    assert whole.robust_ap == resumed.robust_ap
    assert [g.adversarial for g in whole.gallery.items] == [g.adversarial for g in resumed.gallery.items]
    calls.clear()
    other = AttackSuite(**{**suite.__dict__, "eps": 8 / 255})
    evaluate_attacks(model, data, other, quiet=True, resume=tmp_path)
    assert calls.count("pga") == shards  # other settings: crafted again


def test_prepare_craft_and_score_are_steps_callable_alone(toy):
    """evaluate_attacks is prepare -> craft_attack -> score_run; the steps called by hand give the same run."""
    from robusthash.robustness import craft_attack, prepare, score_run

    data, model = toy
    suite = AttackSuite(attacks=["pga", "p2p"], protocol="pgd20", eps=16 / 255, topk=None, steps=3)
    whole = evaluate_attacks(model, data, suite, quiet=True)
    prep = prepare(model, data, suite)
    crafted = [c for name in suite.attacks for c in craft_attack(prep, data, name)]
    assert [c.name for c in crafted] == ["pga", "p2p"] and len(prep.indices) == len(data.query)
    run = score_run(prep, data, crafted)
    assert [a.scores.ap for a in run.attacks] == [a.scores.ap for a in whole.attacks]
    assert run.robust_ap == whole.robust_ap and run.clean.map == whole.clean.map
    assert [g.query_index for g in run.gallery.items] == [g.query_index for g in whole.gallery.items]


def test_progress_bars_name_the_model(toy, capsys):
    data, model = toy
    evaluate_attacks(
        model, data, AttackSuite(attacks=["pga"], steps=2, gallery_queries=0), quiet=False, label="toy-model"
    )
    assert "toy-model: pga" in capsys.readouterr().err
