"""The query threat model: the oracle's counting and answers, Square and QAIR against per-query loops."""

from __future__ import annotations

import math

import pytest
import torch

from robusthash.attacks import CodeBank, create_attack, query_generator
from robusthash.attacks.base import project_l2
from robusthash.attacks.qair import relevance, signhunter_chunk
from robusthash.attacks.square import bump, square_fraction, square_pattern, square_side
from robusthash.codes import binarize, pharos_code
from robusthash.evaluation import encode
from robusthash.models.fixed_rows import FixedRows
from robusthash.oracle import BudgetExceeded, QueryOracle, top_ranked


@pytest.fixture(scope="module")
def setup(toy):
    data, model = toy
    database = CodeBank(encode(model, data.database), data.database.labels)
    x, y, _ = data.query.batch(torch.arange(len(data.query)))
    return model.eval(), database, x[:6], y[:6]


def test_oracle_counts_every_image_and_enforces_the_budget(setup):
    model, database, x, _ = setup
    oracle = QueryOracle(FixedRows(model), count=3, budget=4)
    oracle(x[:3], torch.tensor([0, 0, 2]))  # two images for query 0: duplicates count
    oracle(torch.cat([x[:1], x[:1]]), torch.tensor([0, 0]))  # the same image twice counts twice
    assert oracle.spent.tolist() == [4, 0, 1]
    with pytest.raises(BudgetExceeded):
        oracle(x[:1], torch.tensor([0]))
    assert oracle.spent.tolist() == [4, 0, 1]  # a refused call charges nothing


def test_oracle_answers_without_gradients(setup):
    model, database, x, _ = setup
    images = x[:2].clone().requires_grad_(True)
    for oracle in (
        QueryOracle(model, 2, 9),
        QueryOracle(model, 2, 9, continuous=True),
        QueryOracle(model, 2, 9, "rank", database.codes, topk=5),
    ):
        assert not oracle(images, torch.arange(2)).requires_grad
    codes = QueryOracle(model, 2, 9)(x[:2], torch.arange(2))
    assert torch.equal(codes, binarize(model.preactivation(x[:2])))


def test_rank_access_is_the_hamming_ranking_with_ties_by_index():
    g = torch.Generator().manual_seed(0)
    database = torch.where(torch.rand(50, 6, generator=g) < 0.5, -1.0, 1.0)
    queries = torch.where(torch.rand(4, 6, generator=g) < 0.5, -1.0, 1.0)
    ranked = top_ranked(queries, database, 12)
    for q, row in zip(queries, ranked, strict=True):
        distance = [int((q != d).sum()) for d in database]
        expected = sorted(range(50), key=lambda j: (distance[j], j))[:12]
        assert row.tolist() == expected


def test_attacks_report_exactly_the_images_they_sent(setup, monkeypatch):
    model, database, x, y = setup
    tally: dict[int, int] = {}
    original = QueryOracle.__call__

    def spy(self, images, owners):
        for owner in owners.tolist():
            tally[owner] = tally.get(owner, 0) + 1
        return original(self, images, owners)

    monkeypatch.setattr(QueryOracle, "__call__", spy)
    for name in ("square", "qair"):
        tally.clear()
        attack = create_attack(name, model, database=database, budget=40, oracle_topk=10, eps=16 / 255)
        attack(x, y, indices=torch.arange(len(x)))  # one batch: oracle rows are the batch rows
        assert {i: attack.queries_used[i] for i in range(len(x))} == tally, name
        assert max(tally.values()) <= 40


def test_square_schedule_is_the_authors_p_selection():
    def authors(p_init, it, n_iters):  # the public code's p_selection, written out
        it = int(it / n_iters * 10000)
        if 10 < it <= 50:
            return p_init / 2
        if 50 < it <= 200:
            return p_init / 4
        if 200 < it <= 500:
            return p_init / 8
        if 500 < it <= 1000:
            return p_init / 16
        if 1000 < it <= 2000:
            return p_init / 32
        if 2000 < it <= 4000:
            return p_init / 64
        if 4000 < it <= 6000:
            return p_init / 128
        if 6000 < it <= 8000:
            return p_init / 256
        if 8000 < it <= 10000:
            return p_init / 512
        return p_init

    for n_iters in (100, 1000, 10000):
        for it in range(n_iters):
            assert square_fraction(0.05, it, n_iters) == authors(0.05, it, n_iters)
    assert square_side(0.05, 28, 28) == round(math.sqrt(0.05 * 784)) == 6
    assert square_side(1e-6, 28, 28) == 1 and square_side(1.0, 4, 9) == 4


def _square_reference(model, x, anchor, eps, budget, seed, index, p_init=0.05):
    """Square (Alg. 1) on one query, a plain loop: stripes, then one window per iteration, kept if lower."""
    channels, height, width = x.shape
    g = query_generator(seed, index, "square")
    stripes = torch.rand(channels, 1, width, generator=g)
    uniforms = torch.rand(budget, 2 + channels, generator=g)

    def loss(image):
        with torch.no_grad():
            return float((torch.tanh(model.preactivation(image[None]))[0] * anchor).mean())

    best = (x + eps * torch.where(stripes < 0.5, -1.0, 1.0)).clamp(0, 1)
    best_loss = loss(best)
    for it in range(1, budget):
        if best_loss <= -1:
            break
        side = square_side(square_fraction(p_init, it, budget), height, width)
        top, left = int(uniforms[it, 0] * (height - side + 1)), int(uniforms[it, 1] * (width - side + 1))
        candidate = best.clone()
        for c in range(channels):
            sign = -1.0 if uniforms[it, 2 + c] < 0.5 else 1.0
            candidate[c, top : top + side, left : left + side] = (
                x[c, top : top + side, left : left + side] + eps * sign
            ).clamp(0, 1)
        value = loss(candidate)
        if value < best_loss:
            best, best_loss = candidate, value
    return best


def test_square_equals_a_per_query_loop(setup):
    model, database, x, y = setup
    attack = create_attack("square", model, database=database, budget=60, eps=16 / 255, seed=7, batch_size=4)
    index = torch.arange(10, 16)
    adv = attack(x, y, indices=index)
    anchor = pharos_code(y, database.codes, database.labels)
    fixed = FixedRows(model)  # the attack's model calls run on the same blocks
    for row in range(len(x)):
        expected = _square_reference(fixed, x[row], anchor[row], 16 / 255, 60, 7, int(index[row]))
        assert torch.equal(adv[row], expected), row


def test_relevance_and_signhunter_chunks_by_hand():
    original = torch.tensor([[5, 6, 7], [1, 2, 3]])
    returned = torch.tensor([[7, 0, 5], [4, 8, 9]])
    # weights 3, 2, 1 of 6: items 5 (rank 0) and 7 (rank 2) kept -> 4 / 6; nothing kept -> 0
    assert relevance(original, returned).tolist() == pytest.approx([4 / 6, 0.0])
    assert relevance(original, original).tolist() == [1.0, 1.0]
    cycle = [(0, 5), (0, 3), (3, 5), (0, 2), (2, 4), (4, 5)] + [(i, i + 1) for i in range(5)]
    assert [signhunter_chunk(i, 5) for i in range(2 * len(cycle))] == cycle * 2


def _qair_reference(model, database, x, eps, budget, topk):
    """SignHunter on QAIR's relevance for one query, a plain loop over chunks."""
    size = x.numel()

    @torch.no_grad()
    def ranks(image):
        return top_ranked(binarize(model.preactivation(image[None])), database, topk)

    original = ranks(x)
    signs = torch.ones(size)
    best = (x + eps * signs.view_as(x)).clamp(0, 1)
    score = float(relevance(original, ranks(best))[0])
    for it in range(budget - 2):
        if score <= 0:
            break
        start, stop = signhunter_chunk(it, size)
        flipped = signs.clone()
        flipped[start:stop] *= -1
        candidate = (x + eps * flipped.view_as(x)).clamp(0, 1)
        value = float(relevance(original, ranks(candidate))[0])
        if value <= score:
            signs, best, score = flipped, candidate, value
    return best


def test_qair_equals_a_per_query_loop(setup):
    model, database, x, y = setup
    attack = create_attack(
        "qair", model, database=database, budget=50, oracle_topk=15, eps=16 / 255, batch_size=4
    )
    adv = attack(x, y, indices=torch.arange(len(x)))
    fixed = FixedRows(model)
    for row in range(len(x)):
        assert torch.equal(adv[row], _qair_reference(fixed, database.codes, x[row], 16 / 255, 50, 15)), row


def test_budget_curve_is_recorded_at_each_checkpoint(setup):
    model, database, x, y = setup
    attack = create_attack("square", model, database=database, budget=150, eps=16 / 255)
    adv = attack(x, y, indices=torch.arange(len(x)))
    assert sorted(attack.budget_codes) == [100, 150]
    final = model.encode(adv)
    for i in range(len(x)):
        assert torch.equal(attack.budget_codes[150][i], final[i])
        assert attack.queries_used[i] <= 150


def test_square_pattern_is_the_authors_bumps():
    # 3 x 3 bump: centre 1 + 1/4, ring 1/4, normalised; the 5 x 5 pattern: a positive 2 x 5 half, a negative 3 x 5 one
    b = bump(3, 3)
    expected = torch.full((3, 3), 0.25, dtype=torch.float64)
    expected[1, 1] = 1.25
    torch.testing.assert_close(b, expected / expected.norm())
    p = square_pattern(5)
    assert p.shape == (5, 5) and float(p.norm()) == pytest.approx(1.0)
    assert (p[:2] > 0).all() and (p[2:] < 0).all()
    torch.testing.assert_close(p[:2] / p[:2].norm(), bump(2, 5))


def test_l2_projection():
    x = torch.full((2, 1, 2, 2), 0.5)
    far = x + torch.tensor([0.4, 0.01]).view(2, 1, 1, 1)  # norms 0.8 and 0.02
    out = project_l2(far, x, 0.2)
    norms = (out - x).flatten(1).norm(dim=1)
    assert norms.tolist() == pytest.approx([0.2, 0.02])


def _square_l2_reference(model, x, anchor, eps, budget, seed, index, p_init=0.05):
    """Square L2 (the authors' Alg. 3) on one query, with explicit slices for the windows."""
    channels, height, width = x.shape
    g = query_generator(seed, index, "square-l2")
    side0 = height // 5
    start = (height - side0 * 5) // 2
    cells = [(r, c) for r in range((height - start) // side0) for c in range((width - start) // side0)]
    init = torch.rand(len(cells), 1 + channels, generator=g)
    uniforms = torch.rand(budget, 5 + channels, generator=g)

    def loss(image):
        with torch.no_grad():
            return float((torch.tanh(model.preactivation(image[None]))[0] * anchor).mean())

    delta = torch.zeros_like(x)
    for k, (r, c) in enumerate(cells):
        pattern = square_pattern(side0).float()
        pattern = pattern.T if init[k, 0] > 0.5 else pattern
        for ch in range(channels):
            sign = -1.0 if init[k, 1 + ch] < 0.5 else 1.0
            delta[
                ch, start + r * side0 : start + (r + 1) * side0, start + c * side0 : start + (c + 1) * side0
            ] += sign * pattern
    best = (x + delta / delta.norm() * eps).clamp(0, 1)
    best_loss = loss(best)
    for it in range(1, budget):
        if best_loss <= -1:
            break
        side = max(3, round(math.sqrt(square_fraction(p_init, it, budget) * height * width)))
        side = min(side + 1 if side % 2 == 0 else side, height, width)
        u = uniforms[it]
        t1, l1 = int(u[0] * (height - side + 1)), int(u[1] * (width - side + 1))
        t2, l2 = int(u[2] * (height - side + 1)), int(u[3] * (width - side + 1))
        current = best - x
        pattern = square_pattern(side).float()
        pattern = pattern.T if u[4] > 0.5 else pattern
        image_norm = current.norm()
        new = current.clone()
        for ch in range(channels):
            w1 = current[ch, t1 : t1 + side, l1 : l1 + side]
            both = torch.zeros(height, width, dtype=torch.bool)
            both[t1 : t1 + side, l1 : l1 + side] = True
            both[t2 : t2 + side, l2 : l2 + side] = True
            sign = -1.0 if u[5 + ch] < 0.5 else 1.0
            proposal = sign * pattern + w1 / (1e-10 + w1.norm())
            scale = math.sqrt(
                max(eps**2 - float(image_norm) ** 2, 0) / channels + float(current[ch][both].norm()) ** 2
            )
            new[ch, t2 : t2 + side, l2 : l2 + side] = 0
            new[ch, t1 : t1 + side, l1 : l1 + side] = proposal / proposal.norm() * scale
        candidate = (x + new / new.norm() * eps).clamp(0, 1)
        value = loss(candidate)
        if value < best_loss:
            best, best_loss = candidate, value
    return best


def test_square_l2_equals_a_per_query_loop(setup):
    model, database, x, y = setup
    attack = create_attack(
        "square", model, database=database, budget=40, norm="l2", l2_eps=1.5, seed=3, batch_size=4
    )
    index = torch.arange(len(x))
    adv = attack(x, y, indices=index)
    assert ((adv - x).flatten(1).norm(dim=1) <= 1.5 + 1e-5).all()
    anchor = pharos_code(y, database.codes, database.labels)
    fixed = FixedRows(model)
    for row in range(len(x)):
        expected = _square_l2_reference(fixed, x[row], anchor[row], 1.5, 40, 3, int(index[row]))
        torch.testing.assert_close(adv[row], expected, atol=1e-5, rtol=0)
