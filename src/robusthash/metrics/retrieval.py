"""Hamming-ranking retrieval metrics: mAP@K, t-mAP, precision-recall by radius, P@N, P/R at rank cut-offs.

Conventions (the field's, as in the ``CalcTopMap`` of the DHTA / ProS-GAN / CgAT code bases):

- Codes are {-1, +1} arrays (N, K); labels are 0/1 arrays (N, C); numpy arrays or torch tensors.
- An item is relevant to a query when they share at least one label.
- The database is ranked by Hamming distance; **ties are broken by database index** (a stable order), so the
  result never depends on a sort algorithm.
- AP@K averages the precision at each relevant position within the top K and divides by the number of
  relevant items within the top K. A query with none scores 0 and still counts in the mean. ``topk=None``
  ranks the whole database; a ``topk`` larger than the database is clipped to it.
- ``tie_aware=True`` gives the tie-aware AP of He et al. (CVPR 2018), the expectation over orders within ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import torch

from robusthash.metrics import kernels

ArrayLike = np.ndarray | torch.Tensor
DEFAULT_NS: tuple[int, ...] = tuple(range(100, 1001, 100))


SCRATCH_BYTES = (
    256 << 20
)  # what the query blocks of one ranking pass may hold at once (10 bytes per item each)


def _run(kernel: Any, *args: Any, blocks: int = 0) -> None:
    """Call a parallel numba kernel, keeping torch's thread count: numba's OpenMP layer sets the process-wide
    OpenMP thread count when it starts, which would override the user's ``torch.set_num_threads``. ``blocks``
    (a database size): append the number of query blocks to run as parallel tasks, 4 per numba thread unless
    their scratch (``10 blocks`` bytes each) would pass :data:`SCRATCH_BYTES`, never fewer than the threads."""
    threads = torch.get_num_threads()
    try:
        extra = ()
        if blocks:
            workers = numba.get_num_threads()
            extra = (max(workers, min(4 * workers, SCRATCH_BYTES // (10 * blocks))),)
        kernel(*args, *extra)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _numpy(x: ArrayLike, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (N, width), got shape {x.shape}")
    return x


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a boolean (N, W) array into uint64 words (N, ceil(W / 64)), little-endian bit order."""
    packed = np.packbits(bits.astype(bool), axis=1, bitorder="little")
    pad = (-packed.shape[1]) % 8 if packed.shape[1] else 8
    return np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view("<u8")


def _codes(x: ArrayLike, what: str) -> np.ndarray:
    arr = _numpy(x, what)
    positive = arr == 1
    if not (positive | (arr == -1)).all():
        raise ValueError(f"{what} must hold only -1 and +1 (binarize continuous outputs first)")
    return positive


def _labels(x: ArrayLike, what: str) -> np.ndarray:
    arr = _numpy(x, what)
    positive = arr == 1
    if not (positive | (arr == 0)).all():
        raise ValueError(f"{what} must hold only 0 and 1 (multi-hot rows)")
    return positive


@dataclass
class RankingStatistics:
    """What the compiled passes give: per-query AP@topk, hits at cut-offs, and optionally distance histograms."""

    ap: np.ndarray  # (Q,)
    cutoffs: np.ndarray  # (M,) effective cut-offs (clipped to the database size)
    hits: np.ndarray  # (Q, M) relevant items among the first cutoffs[m] ranks
    topk: int
    hist: np.ndarray | None = None  # (Q, K+1) items at each Hamming distance
    relhist: np.ndarray | None = None  # (Q, K+1) relevant items at each Hamming distance


@dataclass
class _Packed:
    q: np.ndarray
    d: np.ndarray
    ql: np.ndarray
    dl: np.ndarray
    bits: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[0], self.d.shape[0]


def _pack(
    query_codes: ArrayLike, db_codes: ArrayLike, query_labels: ArrayLike, db_labels: ArrayLike
) -> _Packed:
    q, d = _codes(query_codes, "query codes"), _codes(db_codes, "database codes")
    ql, dl = _labels(query_labels, "query labels"), _labels(db_labels, "database labels")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"code lengths differ: queries {q.shape[1]} bits, database {d.shape[1]} bits")
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"label widths differ: queries {ql.shape[1]}, database {dl.shape[1]}")
    if q.shape[0] != ql.shape[0] or d.shape[0] != dl.shape[0]:
        raise ValueError("each code row needs one label row")
    if d.shape[0] == 0:
        raise ValueError("the database is empty")
    return _Packed(pack_bits(q), pack_bits(d), pack_bits(ql), pack_bits(dl), q.shape[1])


def _histograms(p: _Packed) -> tuple[np.ndarray, np.ndarray]:
    nq = p.shape[0]
    hist = np.zeros((nq, p.bits + 1), np.int64)
    relhist = np.zeros((nq, p.bits + 1), np.int64)
    if nq:
        _run(kernels.distance_histograms, p.q, p.d, p.ql, p.dl, hist, relhist)
    return hist, relhist


def _topk(topk: int | None, n: int) -> int:
    topk = n if topk is None else int(topk)
    if topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    return min(topk, n)


def packed_ranking(
    q: np.ndarray, d: np.ndarray, ql: np.ndarray, dl: np.ndarray, topk: int, cutoffs: np.ndarray
) -> RankingStatistics:
    """:func:`ranking_statistics` on packed uint64 codes and labels (:func:`pack_bits`), ``topk`` and the
    ascending ``cutoffs`` already within 1..N: the compiled one-pass kernel, nothing unpacked."""
    ap = np.zeros(len(q), np.float64)
    hits = np.zeros((len(q), len(cutoffs)), np.int64)
    if len(q):
        _run(kernels.ranked_relevance, q, d, ql, dl, topk, cutoffs, ap, hits, blocks=len(d))
    return RankingStatistics(ap, cutoffs, hits, topk)


def ranking_statistics(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
    cutoffs: Sequence[int] = (),
    histograms: bool = False,
) -> RankingStatistics:
    """AP@topk and hits at rank ``cutoffs`` from the compiled ranking pass; with ``histograms``, also the
    per-distance counts of all and of relevant items (one more pass). Conventions: module docstring."""
    p = _pack(query_codes, db_codes, query_labels, db_labels)
    nq, n = p.shape
    topk = _topk(topk, n)
    cuts = np.asarray(sorted(int(c) for c in cutoffs), dtype=np.int64)
    if (cuts < 1).any():
        raise ValueError("rank cut-offs must be >= 1")
    cuts = np.minimum(cuts, n)
    stats = packed_ranking(p.q, p.d, p.ql, p.dl, topk, cuts)
    if histograms:
        stats.hist, stats.relhist = _histograms(p)
    return stats


def average_precision(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
    tie_aware: bool = False,
) -> np.ndarray:
    """Per-query AP@topk, shape (Q,). ``tie_aware`` averages over orders within distance ties."""
    if not tie_aware:
        return ranking_statistics(query_codes, db_codes, query_labels, db_labels, topk).ap
    p = _pack(query_codes, db_codes, query_labels, db_labels)
    topk = _topk(topk, p.shape[1])
    hist, relhist = _histograms(p)
    out = np.zeros(p.shape[0], np.float64)
    if len(out):
        _run(kernels.tie_aware_ap, hist, relhist, topk, out)
    return out


def mean_average_precision(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
    tie_aware: bool = False,
) -> float:
    """mAP@topk over all queries (queries with no relevant item in the top K count as 0)."""
    ap = average_precision(query_codes, db_codes, query_labels, db_labels, topk, tie_aware)
    return float(ap.mean()) if len(ap) else 0.0


def targeted_map(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    target_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
) -> float:
    """t-mAP of a targeted attack: mAP where relevance is to each query's *target* label, not its own."""
    return mean_average_precision(query_codes, db_codes, target_labels, db_labels, topk)


def targeted_success(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    target_labels: ArrayLike,
    db_labels: ArrayLike,
    radius: int = 5,
    more_than: int = 10,
) -> np.ndarray:
    """Per query, whether a targeted attack succeeded under NAG's protocol: the database holds more than
    ``more_than`` items sharing a class with the target label within Hamming distance ``radius`` of the code."""
    hist, relhist = _histograms(_pack(query_codes, db_codes, target_labels, db_labels))
    return relhist[:, : radius + 1].sum(1) > more_than


def pr_curve_from_histograms(hist: np.ndarray, relhist: np.ndarray) -> dict[str, np.ndarray]:
    """Precision and recall of Hamming-ball retrieval at each radius r = 0..K.

    Precision at r averages over the queries that retrieve at least one item within r; recall at r averages
    over the queries with at least one relevant item in the database. A radius where no query retrieves
    anything has precision NaN (nothing was measured there).
    """
    retrieved = hist.cumsum(1)
    relevant_retrieved = relhist.cumsum(1)
    num_relevant = relhist.sum(1)
    has_any = retrieved > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision_q = np.where(has_any, relevant_retrieved / np.maximum(retrieved, 1), 0.0)
        counted = has_any.sum(0)
        precision = np.where(counted > 0, precision_q.sum(0) / np.maximum(counted, 1), np.nan)
    has_rel = num_relevant > 0
    if has_rel.any():
        recall = (relevant_retrieved[has_rel] / num_relevant[has_rel, None]).mean(0)
    else:
        recall = np.zeros(hist.shape[1])
    return {"radius": np.arange(hist.shape[1]), "precision": precision, "recall": recall}


def precision_recall_curve(
    query_codes: ArrayLike, db_codes: ArrayLike, query_labels: ArrayLike, db_labels: ArrayLike
) -> dict[str, np.ndarray]:
    """PR curve by Hamming radius (see :func:`pr_curve_from_histograms`)."""
    return pr_curve_from_histograms(*_histograms(_pack(query_codes, db_codes, query_labels, db_labels)))


def precision_recall_at_ranks(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    ranks: Sequence[int] = DEFAULT_NS,
) -> dict[str, np.ndarray]:
    """Precision and recall among the first N ranked items, for each N in ``ranks`` (sorted ascending).

    An N above the database size is clipped to it. Precision averages over all queries; recall over queries
    with at least one relevant item in the database.
    """
    stats = ranking_statistics(
        query_codes, db_codes, query_labels, db_labels, topk=1, cutoffs=ranks, histograms=True
    )
    return _rank_curves(stats)


def _rank_curves(stats: RankingStatistics) -> dict[str, np.ndarray]:
    precision = (
        (stats.hits / stats.cutoffs[None, :]).mean(0) if len(stats.hits) else np.zeros(len(stats.cutoffs))
    )
    nrel = stats.relhist.sum(1)
    has_rel = nrel > 0
    recall = (
        (stats.hits[has_rel] / nrel[has_rel, None]).mean(0) if has_rel.any() else np.zeros(len(stats.cutoffs))
    )
    return {"n": stats.cutoffs, "precision": precision, "recall": recall}


def precision_at_n(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    ns: Sequence[int] = DEFAULT_NS,
) -> np.ndarray:
    """P@N for each N in ``ns`` (default 100, 200, ..., 1000); an N above the database size is clipped to it."""
    stats = ranking_statistics(query_codes, db_codes, query_labels, db_labels, topk=1, cutoffs=ns)
    return (stats.hits / stats.cutoffs[None, :]).mean(0) if len(stats.hits) else np.zeros(len(stats.cutoffs))


def retrieval_report(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
    ns: Sequence[int] = DEFAULT_NS,
) -> dict[str, Any]:
    """mAP@topk, per-query AP, PR curve and P@N / R@N from a single pass."""
    return report_from_statistics(
        ranking_statistics(query_codes, db_codes, query_labels, db_labels, topk, ns, histograms=True)
    )


def report_from_statistics(stats: RankingStatistics) -> dict[str, Any]:
    """The :func:`retrieval_report` of ranking statistics that carry histograms."""
    if stats.hist is None or stats.relhist is None:
        raise ValueError("the report needs the distance histograms")
    pr = pr_curve_from_histograms(stats.hist, stats.relhist)
    ranks = _rank_curves(stats)
    return {
        "map": float(stats.ap.mean()) if len(stats.ap) else 0.0,
        "topk": stats.topk,
        "ap": stats.ap,
        "pr_curve": {k: v.tolist() for k, v in pr.items()},
        "p_at_n": {
            "n": ranks["n"].tolist(),
            "precision": ranks["precision"].tolist(),
            "recall": ranks["recall"].tolist(),
        },
    }


def hamming_ranking(query_codes: ArrayLike, db_codes: ArrayLike, k: int) -> np.ndarray:
    """Indices of the first ``k`` database items for each query under the stable order (distance, index).

    For a handful of queries (galleries, inspection); mAP and friends never materialise the ranking.
    """
    q = _numpy(query_codes, "query codes").astype(np.int32)
    d = _numpy(db_codes, "database codes").astype(np.int32)
    distances = (d.shape[1] - q @ d.T) // 2
    return np.argsort(distances, axis=1, kind="stable")[:, :k]
