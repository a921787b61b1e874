"""Compiled Hamming-ranking kernels (numba): XOR + popcount on bit-packed codes, counting-sort ranking.

Why numba: an exact stable tie rule needs every query's full distance histogram, which faiss' k-NN search
does not give (and it does not order ties by index); numba compiles a hardware ``popcnt`` loop (well under
1 ns per query-database pair), runs queries in parallel, and is a plain wheel on PyPI.

Distances are integers 0..K, so the stable order "by distance, then by database index" is a counting sort:
one pass builds the histogram, a second pass places each item at ``start[d]++``. Nothing of size Q x N is
ever built: each query uses O(N) scratch memory inside its own loop iteration.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM's ``ctpop`` on a uint64: one ``popcnt`` instruction on x86-64 with the host target."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, nogil=True)
def _distances(q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, i: int,
               dist: np.ndarray, rel: np.ndarray, hist: np.ndarray, relhist: np.ndarray) -> None:  # fmt: skip
    n, words = db.shape
    label_words = ql.shape[1]
    for j in range(n):
        d = 0
        for k in range(words):
            d += _popcount(q[i, k] ^ db[j, k])
        r = 0
        for k in range(label_words):
            if ql[i, k] & dl[j, k]:
                r = 1
                break
        dist[j] = d
        rel[j] = r
        hist[d] += 1
        relhist[d] += r


@njit(parallel=True, cache=True)
def ranking_statistics(q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, topk: int,
                       cutoffs: np.ndarray, hist: np.ndarray, relhist: np.ndarray,
                       ap: np.ndarray, hits: np.ndarray) -> None:  # fmt: skip
    """Fill, per query, the distance histograms, AP@topk under the stable order, and hits at ``cutoffs``.

    ``q``/``db``: packed codes (uint64 words); ``ql``/``dl``: packed labels. ``cutoffs`` ascending, each in
    1..N; ``topk`` in 1..N. Outputs: ``hist``/``relhist`` (Q, K+1) all / relevant items at each distance,
    ``ap`` (Q,), ``hits`` (Q, len(cutoffs)) relevant items among the first ``cutoffs[c]`` ranks.
    """
    nq = q.shape[0]
    n = db.shape[0]
    nbins = hist.shape[1]
    ncut = cutoffs.shape[0]
    depth = topk
    if ncut > 0 and cutoffs[ncut - 1] > depth:
        depth = cutoffs[ncut - 1]
    for i in prange(nq):
        dist = np.empty(n, np.uint16)
        rel = np.empty(n, np.uint8)
        _distances(q, db, ql, dl, i, dist, rel, hist[i], relhist[i])
        start = np.empty(nbins, np.int64)
        cum = 0
        for d in range(nbins):
            start[d] = cum
            cum += hist[i, d]
        relpos = np.zeros(depth, np.uint8)
        for j in range(n):
            d = dist[j]
            p = start[d]
            if p < depth:
                relpos[p] = rel[j]
            start[d] = p + 1
        found = 0
        total = 0.0
        for p in range(topk):
            if relpos[p]:
                found += 1
                total += found / (p + 1.0)
        ap[i] = total / found if found > 0 else 0.0
        found = 0
        c = 0
        for p in range(depth):
            found += relpos[p]
            while c < ncut and cutoffs[c] == p + 1:
                hits[i, c] = found
                c += 1


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
