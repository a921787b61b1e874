"""Every metric against a plain per-query loop written here, on random codes with many ties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from robusthash import metrics


def _random_case(seed: int, nq: int = 40, nd: int = 300, bits: int = 6, classes: int = 5, p: float = 0.25):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1, 1], (nq, bits))
    d = rng.choice([-1, 1], (nd, bits))
    ql = (rng.random((nq, classes)) < p).astype(np.int64)
    dl = (rng.random((nd, classes)) < p).astype(np.int64)
    ql[:3] = 0  # queries with no label at all: never any relevant item
    return q, d, ql, dl


def _ranking(qi, d, qli, dl):
    dist = (d.shape[1] - d @ qi) / 2
    order = np.argsort(dist, kind="stable")  # ties by database index
    return dist[order], (dl[order] @ qli > 0)


def reference_ap(q, d, ql, dl, topk):
    out = []
    for i in range(len(q)):
        _, rel = _ranking(q[i], d, ql[i], dl)
        rel = rel[: (len(d) if topk is None else topk)]
        if rel.sum() == 0:
            out.append(0.0)
            continue
        pos = np.flatnonzero(rel) + 1
        out.append(float(np.mean(np.arange(1, len(pos) + 1) / pos)))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("topk", [None, 1, 7, 50, 299, 300, 5000])
def test_map_matches_per_query_loop(seed, topk):
    q, d, ql, dl = _random_case(seed)
    got = metrics.average_precision(q, d, ql, dl, topk=topk)
    np.testing.assert_allclose(got, reference_ap(q, d, ql, dl, topk), rtol=0, atol=1e-12)
    assert metrics.mean_average_precision(q, d, ql, dl, topk) == pytest.approx(got.mean())


@pytest.mark.parametrize("topk", [1, 100, 2000, 9000])
def test_map_beyond_the_threshold_sample_matches_the_loop(topk):
    """A database larger than the kernel's threshold sample (4,096 items), so the candidate threshold is a guess
    from the sample; P@N and mAP agree with the loop at every depth."""
    q, d, ql, dl = _random_case(7, nq=12, nd=9000, bits=12, classes=6)
    stats = metrics.ranking_statistics(q, d, ql, dl, topk, cutoffs=[1, 50, 3000])
    np.testing.assert_allclose(stats.ap, reference_ap(q, d, ql, dl, topk), rtol=0, atol=1e-12)
    for i in range(len(q)):
        _, rel = _ranking(q[i], d, ql[i], dl)
        assert list(stats.hits[i]) == [rel[:1].sum(), rel[:50].sum(), rel[:3000].sum()]


def test_map_when_the_threshold_sample_misleads():
    """Every sampled item (every 2nd of 8,192) is the query itself, every other item far away: the sample's
    threshold keeps 4,096 items, fewer than the depth of 5,000, so the kernel must widen it and scan again."""
    rng = np.random.default_rng(3)
    q = rng.choice([-1, 1], (2, 32))
    d = np.where(np.arange(8192)[:, None] % 2 == 0, q[0], -q[0]) * rng.choice([1, 1, 1, -1], (8192, 32))
    d[::2] = q[0]
    ql = np.array([[1, 0], [0, 1]])
    dl = rng.integers(0, 2, (8192, 2))
    np.testing.assert_allclose(
        metrics.average_precision(q, d, ql, dl, 5000), reference_ap(q, d, ql, dl, 5000)
    )


@pytest.mark.parametrize("bits", [1, 63, 64, 65, 130])
def test_map_multiword_codes_and_labels(bits):
    rng = np.random.default_rng(bits)
    q = rng.choice([-1, 1], (20, bits))
    d = rng.choice([-1, 1], (200, bits))
    ql = (rng.random((20, 70)) < 0.03).astype(int)  # 70 labels: two packed words
    dl = (rng.random((200, 70)) < 0.03).astype(int)
    np.testing.assert_allclose(metrics.average_precision(q, d, ql, dl, 100), reference_ap(q, d, ql, dl, 100))


def test_accepts_torch_tensors_and_zero_label_queries_count():
    q, d, ql, dl = _random_case(5)
    a = metrics.mean_average_precision(torch.tensor(q).float(), torch.tensor(d), torch.tensor(ql), dl, 20)
    assert a == pytest.approx(reference_ap(q, d, ql, dl, 20).mean())
    assert (metrics.average_precision(q, d, ql, dl)[:3] == 0).all()


def test_stable_tie_rule_is_by_database_index():
    # All database items at the same distance: the ranking is the database order.
    q = np.ones((1, 4))
    d = np.ones((5, 4))
    ql = np.array([[1, 0]])
    dl = np.array([[0, 1], [1, 0], [0, 1], [0, 1], [1, 0]])
    # relevant at ranks 2 and 5 -> AP = (1/2 + 2/5) / 2
    assert metrics.mean_average_precision(q, d, ql, dl) == pytest.approx((0.5 + 0.4) / 2)
    assert metrics.mean_average_precision(q, d, ql, dl, topk=3) == pytest.approx(0.5)


def test_targeted_map_uses_target_labels():
    q, d, ql, dl = _random_case(7)
    targets = np.roll(ql, 1, axis=0)
    assert metrics.targeted_map(q, d, targets, dl, 30) == pytest.approx(
        reference_ap(q, d, targets, dl, 30).mean()
    )


def _tie_aware_reference(qi, d, qli, dl):
    """Average AP over every order of the items within each distance tie (tiny databases only)."""
    dist = (d.shape[1] - d @ qi) / 2
    rel = (dl @ qli > 0).astype(int)
    groups = [np.flatnonzero(dist == v) for v in np.unique(dist)]
    aps = []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        r = rel[np.concatenate(perms)]
        if r.sum() == 0:
            aps.append(0.0)
            continue
        pos = np.flatnonzero(r) + 1
        aps.append(np.mean(np.arange(1, len(pos) + 1) / pos))
    return float(np.mean(aps))


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_ap_is_the_expectation_over_tie_orders(seed):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1, 1], (3, 3))
    d = rng.choice([-1, 1], (7, 3))
    ql = (rng.random((3, 3)) < 0.5).astype(int)
    dl = (rng.random((7, 3)) < 0.5).astype(int)
    got = metrics.average_precision(q, d, ql, dl, tie_aware=True)
    want = [_tie_aware_reference(q[i], d, ql[i], dl) for i in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_tie_aware_with_cutoff_is_ratio_of_expectations():
    rng = np.random.default_rng(11)
    q = rng.choice([-1, 1], (1, 2))
    d = rng.choice([-1, 1], (7, 2))
    ql = np.array([[1, 0]])
    dl = (rng.random((7, 2)) < 0.5).astype(int)
    topk = 4
    dist = (2 - d @ q[0]) / 2
    rel = (dl @ ql[0] > 0).astype(int)
    groups = [np.flatnonzero(dist == v) for v in np.unique(dist)]
    nums, dens = [], []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        r = rel[np.concatenate(perms)][:topk]
        pos = np.flatnonzero(r) + 1
        nums.append(np.sum(np.arange(1, len(pos) + 1) / pos))
        dens.append(r.sum())
    want = np.mean(nums) / np.mean(dens) if np.mean(dens) else 0.0
    assert metrics.average_precision(q, d, ql, dl, topk, tie_aware=True)[0] == pytest.approx(want)


def test_tie_aware_equals_plain_ap_without_ties():
    bits = 12
    q = np.ones((1, bits))
    d = np.array([[1] * (bits - k) + [-1] * k for k in range(bits + 1)])  # distinct distances 0..12
    rng = np.random.default_rng(3)
    dl = (rng.random((bits + 1, 3)) < 0.4).astype(int)
    ql = np.array([[1, 1, 0]])
    for topk in (None, 5):
        assert metrics.average_precision(q, d, ql, dl, topk, tie_aware=True) == pytest.approx(
            metrics.average_precision(q, d, ql, dl, topk)
        )


def test_precision_recall_curve_matches_loop():
    q, d, ql, dl = _random_case(3, nq=25, nd=150)
    got = metrics.precision_recall_curve(q, d, ql, dl)
    bits = q.shape[1]
    precisions = [[] for _ in range(bits + 1)]
    recalls = [[] for _ in range(bits + 1)]
    for i in range(len(q)):
        dist = (bits - d @ q[i]) / 2
        rel = dl @ ql[i] > 0
        for r in range(bits + 1):
            inside = dist <= r
            if inside.sum():
                precisions[r].append(rel[inside].mean())
            if rel.sum():
                recalls[r].append(rel[inside].sum() / rel.sum())
    np.testing.assert_allclose(got["precision"], [np.mean(p) for p in precisions])
    np.testing.assert_allclose(got["recall"], [np.mean(r) for r in recalls])
    assert got["recall"][-1] == pytest.approx(1.0)


def test_precision_and_recall_at_ranks_match_loop():
    q, d, ql, dl = _random_case(4)
    ranks = [1, 10, 100, 300, 1000]
    got = metrics.precision_recall_at_ranks(q, d, ql, dl, ranks)
    prec, rec = [], []
    for n in ranks:
        m = min(n, len(d))
        p_q, r_q = [], []
        for i in range(len(q)):
            _, rel = _ranking(q[i], d, ql[i], dl)
            p_q.append(rel[:m].sum() / m)
            if rel.sum():
                r_q.append(rel[:m].sum() / rel.sum())
        prec.append(np.mean(p_q))
        rec.append(np.mean(r_q))
    np.testing.assert_allclose(got["precision"], prec)
    np.testing.assert_allclose(got["recall"], rec)
    np.testing.assert_allclose(metrics.precision_at_n(q, d, ql, dl, ranks), prec)


def test_retrieval_report_is_consistent():
    q, d, ql, dl = _random_case(8)
    rep = metrics.retrieval_report(q, d, ql, dl, topk=60, ns=[10, 20])
    assert rep["map"] == pytest.approx(reference_ap(q, d, ql, dl, 60).mean())
    assert rep["p_at_n"]["n"] == [10, 20]


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.zeros((2, 4)), "only -1 and \\+1"),
        (np.ones(4), "2-D"),
    ],
)
def test_bad_codes_are_rejected(codes, message):
    with pytest.raises(ValueError, match=message):
        metrics.mean_average_precision(codes, np.ones((3, 4)), np.ones((2, 1)), np.ones((3, 1)))


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="code lengths differ"):
        metrics.mean_average_precision(np.ones((2, 4)), np.ones((3, 5)), np.ones((2, 1)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="label widths differ"):
        metrics.mean_average_precision(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="topk"):
        metrics.mean_average_precision(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 1)), np.ones((3, 1)), 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_targeted_success_matches_a_per_query_count(seed):
    q, d, _, dl = _random_case(seed, nq=30, nd=400, bits=12, p=0.3)
    targets = (np.random.default_rng(seed + 10).random((30, 5)) < 0.3).astype(np.int64)
    for radius, more_than in [(5, 10), (3, 2), (0, 0)]:
        got = metrics.targeted_success(q, d, targets, dl, radius, more_than)
        want = [
            int(((((d.shape[1] - d @ q[i]) / 2) <= radius) & (dl @ targets[i] > 0)).sum()) > more_than
            for i in range(len(q))
        ]
        assert got.tolist() == want
