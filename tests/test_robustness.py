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
        attack = create_attack(name, model, reference=banks.reference, database=banks.database, eps=32 / 255,
                               seed=2, **ATTACKS.get(name).test_options).fit()  # fmt: skip
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
