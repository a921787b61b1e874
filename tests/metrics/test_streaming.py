"""The streamed metrics against the per-query reference loop and the in-memory report, chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest

from robusthash import metrics
from robusthash.metrics.streaming import streaming_report, streaming_statistics

from .test_retrieval import _random_case, reference_ap


def _packed(q, d, ql, dl):
    return (
        metrics.pack_bits(q == 1),
        metrics.pack_bits(ql == 1),
        metrics.pack_bits(d == 1),
        metrics.pack_bits(dl == 1),
    )


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("topk", [1, 25, 300, None])
def test_streamed_map_matches_the_per_query_loop(chunk, topk):
    q, d, ql, dl = _random_case(3, bits=6)  # 64 distinct codes for 300 items: heavy ties across chunks
    report = streaming_report(*_packed(q, d, ql, dl), bits=6, topk=topk, ns=(10, 100, 500), chunk=chunk)
    expected = reference_ap(q, d, ql, dl, topk)
    np.testing.assert_allclose(report["ap"], expected, rtol=0, atol=1e-12)
    bare = streaming_statistics(*_packed(q, d, ql, dl), bits=6, topk=topk, chunk=chunk, histograms=False)
    np.testing.assert_allclose(bare.ap, expected, rtol=0, atol=1e-12)
    assert bare.relhist is None


@pytest.mark.parametrize("bits", [8, 70])
def test_streamed_report_equals_the_in_memory_report(bits):
    q, d, ql, dl = _random_case(5, nq=30, nd=500, bits=bits, classes=70)
    expected = metrics.retrieval_report(q, d, ql, dl, topk=100, ns=(50, 100, 200, 1000))
    got = streaming_report(*_packed(q, d, ql, dl), bits=bits, topk=100, ns=(50, 100, 200, 1000), chunk=33)
    assert got["map"] == pytest.approx(expected["map"], abs=1e-12)
    np.testing.assert_allclose(got["ap"], expected["ap"], rtol=0, atol=1e-12)
    np.testing.assert_equal(got["pr_curve"], expected["pr_curve"])  # NaN where no query retrieves anything
    np.testing.assert_equal(got["p_at_n"], expected["p_at_n"])


def test_memory_mapped_database(tmp_path):
    q, d, ql, dl = _random_case(7, bits=16)
    pq, pql, pd, pdl = _packed(q, d, ql, dl)
    np.save(tmp_path / "codes.npy", pd)
    np.save(tmp_path / "labels.npy", pdl)
    mapped = np.load(tmp_path / "codes.npy", mmap_mode="r"), np.load(tmp_path / "labels.npy", mmap_mode="r")
    got = streaming_report(pq, pql, *mapped, bits=16, topk=50, chunk=40)
    np.testing.assert_allclose(got["ap"], reference_ap(q, d, ql, dl, 50), rtol=0, atol=1e-12)


def test_unpacked_input_is_rejected_with_the_remedy():
    q, d, ql, dl = _random_case(1)
    with pytest.raises(ValueError, match="pack_bits"):
        streaming_report(q, ql, d, dl, bits=6)


def test_rankings_when_most_items_are_candidates():
    """2-bit codes: a quarter of a 300,000-item database ties at distance 0 (in memory: 75,000 candidates for a
    depth of 10; streamed: every item of each 100,000-item chunk is ranked)."""
    q, d, ql, dl = _random_case(5, nq=8, nd=300_000, bits=2, classes=3)  # the first 3 queries have no labels
    np.testing.assert_allclose(metrics.average_precision(q, d, ql, dl, 10), reference_ap(q, d, ql, dl, 10))
    streamed = streaming_statistics(
        *_packed(q, d, ql, dl), bits=2, topk=None, chunk=100_000, histograms=False
    )
    np.testing.assert_allclose(streamed.ap, reference_ap(q, d, ql, dl, None), rtol=0, atol=1e-12)
