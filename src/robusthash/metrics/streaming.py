"""Retrieval metrics streamed over a database of any size, in bounded memory, shardable across processes.

The same numbers as :func:`~robusthash.metrics.retrieval_report` (mAP@K with the stable tie rule, PR by radius,
P@N and R@N), computed from bit-packed codes (:func:`~robusthash.metrics.pack_bits`; a memory-mapped array
works) in two passes over database chunks:

1. **Histograms.** Per query, the number of items and of relevant items at each Hamming distance. They add up
   over chunks and over shards. From the totals: the distance ``d*`` of the last item within the ranking depth
   and the first rank position of each distance (an exclusive cumulative sum).
2. **Placement.** Each item at distance ``d <= d*`` takes the next free position of its distance. Chunks come
   in index order, so ties stay in index order. A shard of the database starts each distance after the items
   that lower shards hold at that distance (their histograms, gathered), so the per-rank rankings merge by
   summing their relevance arrays: the global top-K is never sorted.

Memory: the inputs, Q x (K + 1) counters, Q x depth bytes of ranked relevance and one chunk's scratch per
thread, whatever the database's size. Sharding is a strategy object (:class:`Collective`): this module does not
import ``torch.distributed``; :class:`robusthash.distributed.TorchCollective` is the one it is given there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from robusthash.metrics import kernels
from robusthash.metrics.retrieval import (
    DEFAULT_NS,
    RankingStatistics,
    _run,
    report_from_statistics,
)

DEFAULT_CHUNK = 1 << 16


class Collective(Protocol):
    """How the shards of a database combine their counts: one process, or one rank of a process group."""

    rank: int
    world_size: int

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        """Every rank's ``array`` (same shape and dtype on all ranks), stacked along a new first axis."""
        ...


class Alone:
    """The whole database in one process."""

    rank = 0
    world_size = 1

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        return array[None]


def _chunks(n: int, chunk: int) -> Iterator[slice]:
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def _check(q: np.ndarray, ql: np.ndarray, db: np.ndarray, dl: np.ndarray) -> None:
    for name, a in (
        ("query codes", q),
        ("query labels", ql),
        ("database codes", db),
        ("database labels", dl),
    ):
        if a.dtype != np.uint64 or a.ndim != 2:
            raise ValueError(
                f"{name} must be bit-packed uint64 words (N, W) (metrics.pack_bits), got {a.dtype} {a.shape}"
            )
    if q.shape[1] != db.shape[1] or ql.shape[1] != dl.shape[1]:
        raise ValueError("queries and database differ in code or label words")
    if len(q) != len(ql) or len(db) != len(dl):
        raise ValueError("each code row needs one label row")


def streaming_statistics(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    bits: int,
    topk: int | None = None,
    cutoffs: Sequence[int] = (),
    chunk: int = DEFAULT_CHUNK,
    collective: Collective | None = None,
    progress: Any = None,
    histograms: bool = True,
) -> RankingStatistics:
    """Ranking statistics of packed queries against a packed database, streamed over chunks of ``chunk`` items.

    ``histograms=False`` skips the relevant-item histograms (PR curve, recall) in the first pass: AP@topk and
    hits at the cut-offs only. With a ``collective``, ``db_codes``/``db_labels`` are this rank's *contiguous*
    shard, ranks in index order (rank r holds items before rank r + 1's); ``topk`` and ``cutoffs`` refer to the
    whole database, and every rank returns the whole result. ``progress`` (a tqdm-like object) is advanced by
    the items of each chunk pass.
    """
    q, ql = np.ascontiguousarray(query_codes), np.ascontiguousarray(query_labels)
    _check(q, ql, db_codes, db_labels)
    if bits < 1 or bits > 64 * q.shape[1]:
        raise ValueError(f"bits must be in 1..{64 * q.shape[1]} for {q.shape[1]} words, got {bits}")
    collective = collective or Alone()
    nq, nbins = len(q), bits + 1
    sizes = collective.all_gather(np.array([len(db_codes)], np.int64))[:, 0]
    n = int(sizes.sum())
    if n == 0:
        raise ValueError("the database is empty")
    topk = n if topk is None else min(int(topk), n)
    if topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    cuts = np.minimum(np.asarray(sorted(int(c) for c in cutoffs), np.int64), n)
    if (cuts < 1).any():
        raise ValueError("rank cut-offs must be >= 1")
    depth = max(topk, int(cuts[-1]) if len(cuts) else 0)

    hist = np.zeros((nq, nbins), np.int64)
    relhist = np.zeros((nq, nbins), np.int64)
    h, rh = np.zeros_like(hist), np.zeros_like(relhist)
    for part in _chunks(len(db_codes), chunk):
        codes = np.ascontiguousarray(db_codes[part])
        if histograms:
            _run(kernels.distance_histograms, q, codes, ql, np.ascontiguousarray(db_labels[part]), h, rh)
            hist += h
            relhist += rh
        else:
            _run(kernels.add_distance_histograms, q, codes, hist)
        if progress is not None:
            progress.update(part.stop - part.start)
    per_rank = collective.all_gather(hist)  # (world, Q, K + 1)
    total = per_rank.sum(0)
    relhist = collective.all_gather(relhist).sum(0) if histograms else None
    cumulative = total.cumsum(1)
    reached = cumulative >= depth
    dstar = np.where(reached.any(1), reached.argmax(1), nbins - 1).astype(np.int64)
    start = cumulative - total + per_rank[: collective.rank].sum(0)  # first rank of each distance in my shard
    relpos = np.zeros((nq, depth), np.uint8)
    for part in _chunks(len(db_codes), chunk):
        _run(
            kernels.place_chunk,
            q,
            np.ascontiguousarray(db_codes[part]),
            ql,
            np.ascontiguousarray(db_labels[part]),
            dstar,
            start,
            relpos,
            blocks=part.stop - part.start,
        )
        if progress is not None:
            progress.update(part.stop - part.start)
    if collective.world_size > 1:
        relpos = collective.all_gather(relpos).sum(0, dtype=np.uint8)  # positions are disjoint across ranks
    ap = np.zeros(nq, np.float64)
    hits = np.zeros((nq, len(cuts)), np.int64)
    if nq:
        _run(kernels.ap_from_positions, relpos, topk, cuts, ap, hits)
    return RankingStatistics(ap, cuts, hits, topk, total, relhist)


def streaming_report(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    bits: int,
    topk: int | None = None,
    ns: Sequence[int] = DEFAULT_NS,
    **options: Any,
) -> dict[str, Any]:
    """:func:`~robusthash.metrics.retrieval_report` (mAP@topk, per-query AP, PR curve, P@N / R@N) of packed
    codes, streamed; ``options`` (``chunk``, ``collective``, ``progress``) as for :func:`streaming_statistics`."""
    stats = streaming_statistics(
        query_codes, query_labels, db_codes, db_labels, bits, topk, ns, histograms=True, **options
    )
    return report_from_statistics(stats)
