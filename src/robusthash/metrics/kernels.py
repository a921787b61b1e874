"""Compiled Hamming-ranking kernels (numba): XOR + popcount on bit-packed codes, counting-sort ranking.

Why numba: an exact stable tie rule needs every query's full distance histogram, which faiss' k-NN search
does not give (and it does not order ties by index); numba compiles a hardware ``popcnt`` loop (well under
1 ns per query-database pair), runs queries in parallel, and is a plain wheel on PyPI.

Distances are integers 0..K, so the stable order "by distance, then by database index" is a counting sort: one
pass computes distances and their histogram, which gives the distance ``d*`` of the last item within the
ranking depth; a second, branch-free pass collects the items at distance <= d* (a few percent of the database
for mAP@5000), which are then placed at ``start[d]++`` in index order and checked for relevance. Nothing of
size Q x N is ever built: each query uses O(N) scratch memory inside its own loop iteration. Histograms are
kept in four lanes (item index mod 4) so that consecutive increments of the same bin do not wait on each
other.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM's ``ctpop`` on a uint64: one ``popcnt`` instruction on x86-64 with the host target.

    Typed as returning int64 (the count is at most 64): numba would turn uint64 + int64 into float64.
    """
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, inline="always")
def _distance(q: np.ndarray, db: np.ndarray, i: int, j: int) -> int:
    d = 0
    for k in range(db.shape[1]):
        d += _popcount(q[i, k] ^ db[j, k])
    return d


@njit(cache=True, inline="always")
def _relevant(ql: np.ndarray, dl: np.ndarray, i: int, j: int) -> bool:
    for k in range(dl.shape[1]):
        if ql[i, k] & dl[j, k]:
            return True
    return False


@njit(cache=True)
def _distances_and_histogram(
    q: np.ndarray, db: np.ndarray, i: int, dist: np.ndarray, hist: np.ndarray
) -> None:
    """``dist[j]`` = D_H(q_i, db_j) for every j, and ``hist`` their histogram.

    Four items per iteration into four histograms: consecutive increments of the same bin would otherwise
    wait on each other (store-to-load forwarding), which costs more than the popcounts. Codes of one word
    (K <= 64) take a specialised loop.
    """
    n = db.shape[0]
    nbins = hist.shape[0]
    h = np.zeros((4, nbins), np.int64)
    h0, h1, h2, h3 = h[0], h[1], h[2], h[3]
    m = n - n % 4
    if db.shape[1] == 1:
        qi = q[i, 0]
        for j in range(0, m, 4):
            a = _popcount(qi ^ db[j, 0])
            b = _popcount(qi ^ db[j + 1, 0])
            c = _popcount(qi ^ db[j + 2, 0])
            e = _popcount(qi ^ db[j + 3, 0])
            dist[j] = a
            dist[j + 1] = b
            dist[j + 2] = c
            dist[j + 3] = e
            h0[a] += 1
            h1[b] += 1
            h2[c] += 1
            h3[e] += 1
    else:
        for j in range(0, m, 4):
            a = _distance(q, db, i, j)
            b = _distance(q, db, i, j + 1)
            c = _distance(q, db, i, j + 2)
            e = _distance(q, db, i, j + 3)
            dist[j] = a
            dist[j + 1] = b
            dist[j + 2] = c
            dist[j + 3] = e
            h0[a] += 1
            h1[b] += 1
            h2[c] += 1
            h3[e] += 1
    for j in range(m, n):
        a = _distance(q, db, i, j)
        dist[j] = a
        h0[a] += 1
    for d in range(nbins):
        hist[d] = h0[d] + h1[d] + h2[d] + h3[d]


@njit(parallel=True, cache=True)
def ranked_relevance(
    q: np.ndarray,
    db: np.ndarray,
    ql: np.ndarray,
    dl: np.ndarray,
    topk: int,
    cutoffs: np.ndarray,
    ap: np.ndarray,
    hits: np.ndarray,
) -> None:
    """Per query: AP@topk under the stable order, and relevant items among the first ``cutoffs[c]`` ranks.

    ``q``/``db``: packed codes (uint64 words); ``ql``/``dl``: packed labels. ``cutoffs`` ascending, each in
    1..N; ``topk`` in 1..N. Outputs ``ap`` (Q,) and ``hits`` (Q, len(cutoffs)).
    """
    nq = q.shape[0]
    n = db.shape[0]
    nbins = 64 * q.shape[1] + 1
    ncut = cutoffs.shape[0]
    depth = topk
    if ncut > 0 and cutoffs[ncut - 1] > depth:
        depth = cutoffs[ncut - 1]
    for i in prange(nq):
        dist = np.empty(n, np.uint16)
        hist = np.empty(nbins, np.int64)
        _distances_and_histogram(q, db, i, dist, hist)
        start = np.empty(nbins, np.int64)
        cum = 0
        dstar = nbins - 1
        for d in range(nbins):
            start[d] = cum
            cum += hist[d]
            if cum >= depth:
                dstar = d
                break
        near = np.empty(cum + 1, np.int64)  # indices at distance <= d*, collected without branches
        count = 0
        for j in range(n):
            near[count] = j
            count += dist[j] <= dstar
        relpos = np.zeros(depth, np.uint8)
        for t in range(count):
            j = near[t]
            d = dist[j]
            p = start[d]
            if p < depth:
                start[d] = p + 1
                if _relevant(ql, dl, i, j):
                    relpos[p] = 1
        _ap_and_hits(relpos, topk, cutoffs, ap, hits, i)


@njit(cache=True, inline="always")
def _ap_and_hits(
    relpos: np.ndarray, topk: int, cutoffs: np.ndarray, ap: np.ndarray, hits: np.ndarray, i: int
) -> None:
    """AP@topk of query ``i`` from the relevance of its ranked positions (``relpos[p]`` for rank p + 1), and
    its relevant items among the first ``cutoffs[c]`` ranks."""
    found = 0
    total = 0.0
    for p in range(topk):
        if relpos[p]:
            found += 1
            total += found / (p + 1.0)
    ap[i] = total / found if found > 0 else 0.0
    found = 0
    c = 0
    ncut = cutoffs.shape[0]
    for p in range(relpos.shape[0]):
        found += relpos[p]
        while c < ncut and cutoffs[c] == p + 1:
            hits[i, c] = found
            c += 1


@njit(parallel=True, cache=True)
def place_chunk(
    q: np.ndarray,
    db: np.ndarray,
    ql: np.ndarray,
    dl: np.ndarray,
    dstar: np.ndarray,
    start: np.ndarray,
    relpos: np.ndarray,
) -> None:
    """The second pass of the streamed ranking, over one database chunk (chunks come in index order).

    Per query ``i``: every chunk item at distance ``d <= dstar[i]`` takes rank position ``start[i, d]`` (then
    incremented), so items at equal distance keep index order; a position below the depth
    ``relpos.shape[1]`` records the item's relevance in ``relpos[i, p]``. ``start`` carries over between
    chunks (and, offset by the items of lower ranks, between database shards).
    """
    nq = q.shape[0]
    n = db.shape[0]
    depth = relpos.shape[1]
    for i in prange(nq):
        limit = dstar[i]
        for j in range(n):
            d = _distance(q, db, i, j)
            if d <= limit:
                p = start[i, d]
                start[i, d] = p + 1
                if p < depth and _relevant(ql, dl, i, j):
                    relpos[i, p] = 1


@njit(parallel=True, cache=True)
def ap_from_positions(
    relpos: np.ndarray, topk: int, cutoffs: np.ndarray, ap: np.ndarray, hits: np.ndarray
) -> None:
    """Per-query AP@topk and hits at ``cutoffs`` from ranked relevance ``relpos`` (Q, depth)."""
    for i in prange(relpos.shape[0]):
        _ap_and_hits(relpos[i], topk, cutoffs, ap, hits, i)


@njit(parallel=True, cache=True)
def distance_histograms(
    q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, hist: np.ndarray, relhist: np.ndarray
) -> None:
    """Per query, the number of database items (``hist``) and of relevant ones (``relhist``) at each
    Hamming distance 0..K, shape (Q, K+1) each."""
    nq = q.shape[0]
    n = db.shape[0]
    nbins = hist.shape[1]
    for i in prange(nq):
        dist = np.empty(n, np.uint16)
        _distances_and_histogram(q, db, i, dist, hist[i])
        rel = np.zeros((2, nbins), np.int64)
        for j in range(n):
            if _relevant(ql, dl, i, j):
                rel[j & 1, dist[j]] += 1
        for d in range(nbins):
            relhist[i, d] = rel[0, d] + rel[1, d]


@njit(parallel=True, cache=True)
def add_distance_histograms(q: np.ndarray, db: np.ndarray, hist: np.ndarray) -> None:
    """``hist[i, d] +=`` the number of database items at Hamming distance d from query i (no relevance)."""
    nq = q.shape[0]
    n = db.shape[0]
    nbins = hist.shape[1]
    for i in prange(nq):
        dist = np.empty(n, np.uint16)
        h = np.empty(nbins, np.int64)
        _distances_and_histogram(q, db, i, dist, h)
        for d in range(nbins):
            hist[i, d] += h[d]


@njit(parallel=True, cache=True)
def tie_aware_ap(hist: np.ndarray, relhist: np.ndarray, topk: int, out: np.ndarray) -> None:
    """Tie-aware AP (He et al., CVPR 2018): the expectation of AP over all orders within distance ties.

    Position ``a + t`` of a tie group of ``n`` items with ``r`` relevant (``a`` items and ``R`` relevant before
    it) is relevant with probability ``r / n`` and then has ``R + 1 + (t - 1)(r - 1)/(n - 1)`` relevant items
    at or before it in expectation. With a cut-off the sum of expected precisions is divided by the expected
    number of relevant items in the top ``topk`` (exact expectation of AP when ``topk = N``).
    """
    nq, nbins = hist.shape
    for i in prange(nq):
        before = 0
        rel_before = 0
        numerator = 0.0
        expected_rel = 0.0
        for d in range(nbins):
            n = hist[i, d]
            if n == 0:
                continue
            m = min(n, topk - before)
            if m <= 0:
                break
            r = relhist[i, d]
            if r > 0:
                c = (r - 1.0) / (n - 1.0) if n > 1 else 0.0
                share = r / n
                for t in range(1, m + 1):
                    numerator += share * (rel_before + 1.0 + (t - 1.0) * c) / (before + t)
            expected_rel += m * r / n
            before += n
            rel_before += r
        out[i] = numerator / expected_rel if expected_rel > 0 else 0.0
