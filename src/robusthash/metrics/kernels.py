"""Compiled Hamming-ranking kernels (numba): XOR + popcount on bit-packed codes, counting-sort ranking.

Why numba: an exact stable tie rule needs every query's full distance histogram, which faiss' k-NN search
does not give (and it does not order ties by index); numba compiles a hardware ``popcnt`` loop (well under
1 ns per query-database pair), runs queries in parallel, and is a plain wheel on PyPI.

Distances are integers 0..K, so the stable order "by distance, then by database index" is a counting sort. The
in-memory ranking (:func:`ranked_relevance`) makes one pass over the database per query, in SIMD, for every
distance; a threshold guessed from a strided sample of them keeps the items that can be ranked (a few percent of
the database for mAP@5000), found through bit masks; their histogram gives the distance ``d*`` of the last
ranked item, and those at distance <= d* are placed at ``start[d]++`` in index order and checked for relevance.
The streamed ranking and the PR curve use full distance histograms instead, kept in four lanes (item index mod
4) so that consecutive increments of the same bin do not wait on each other. Nothing of size Q x N is ever built:
a block of queries shares O(N) scratch memory.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
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


@intrinsic
def _trailing_zeros(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM's ``cttz`` on a nonzero uint64: the index of its lowest set bit (one ``tzcnt``)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@njit(cache=True, inline="always")
def _distance(q: np.ndarray, db: np.ndarray, i: int, j: int) -> int:
    d = 0
    for k in range(db.shape[1]):
        d += _popcount(q[i, k] ^ db[j, k])
    return d


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


REL_BIT = (
    1 << 15
)  # an item's distance entry: its distance (0..32767) with its relevance to the query in bit 15
DIST_MASK = REL_BIT - 1
DIST_BITS = 16  # a candidate: (index << DIST_BITS) | the item's distance entry
SAMPLE = 4096  # database items in the strided sample that sets a query's candidate threshold
MARGIN = 1.0  # the sample must hold this many times its share of the ranking depth
FIXED_STEPS = (
    4  # candidates per 64 items collected without a branch (bench_metrics.py --floor; docs/choices.md)
)


@njit(cache=True, inline="always")
def _relevant(ql: np.ndarray, dl: np.ndarray, i: int, j: int) -> bool:
    """Whether query ``i`` and item ``j`` share a label, without a branch per word."""
    acc = ql[i, 0] & dl[j, 0]
    for k in range(1, dl.shape[1]):
        acc |= ql[i, k] & dl[j, k]
    return acc != 0


@njit(cache=True)
def _sample_threshold(q: np.ndarray, db: np.ndarray, i: int, depth: int, nbins: int) -> int:
    """The smallest distance within which a strided sample of the database holds ``MARGIN`` times its share of
    the ``depth`` nearest items (plus 8): usually d*, the distance of the last ranked item, or one above, and only
    a guess (the caller checks it and widens it when the database holds fewer than ``depth`` items within it)."""
    n = db.shape[0]
    s = min(n, SAMPLE)
    step = n // s
    hist = np.zeros(nbins, np.int64)
    for t in range(s):
        hist[_distance(q, db, i, t * step)] += 1
    need = s * depth / n * MARGIN + 8
    cum = 0
    for d in range(nbins):
        cum += hist[d]
        if cum >= need:
            return d
    return nbins - 1


@njit(cache=True)
def _all_distances(
    q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, i: int, dist: np.ndarray
) -> None:
    """``dist[j]`` (uint16) = D_H(q_i, db_j), with :data:`REL_BIT` set when item j shares a label with query i.
    A loop with no data-dependent store: the compiler turns it into SIMD popcounts (AVX-512 VPOPCNTDQ where the
    CPU has it, byte-table lookups with AVX2), several items per instruction; reading the labels here, as one
    more stream, costs less than fetching a candidate's labels later. Codes and labels of one word each take a
    specialised loop."""
    rel = np.uint16(REL_BIT)
    zero = np.uint16(0)
    if db.shape[1] == 1 and dl.shape[1] == 1:
        qi = q[i, 0]
        qli = ql[i, 0]
        for j in range(db.shape[0]):
            dist[j] = np.uint16(_popcount(qi ^ db[j, 0])) | (rel if (qli & dl[j, 0]) != 0 else zero)
    else:
        for j in range(db.shape[0]):
            dist[j] = np.uint16(_distance(q, db, i, j)) | (rel if _relevant(ql, dl, i, j) else zero)


@njit(cache=True, inline="always")
def _extract(dist: np.ndarray, base: int, mask: np.uint64, near: np.ndarray, count: int) -> int:
    """Append ``(j << DIST_BITS) | dist[j]`` for each set bit b of ``mask`` (j = ``base + b``, in order) to
    ``near[count:]``; returns the new count. The first ``FIXED_STEPS`` run without a branch (a step past the last
    set bit stores to the next free slot without counting it), so that the loop whose trip count follows the
    data, with its mispredicted exit, only runs for crowded blocks."""
    one = np.uint64(1)
    zero = np.uint64(0)
    top = one << np.uint64(63)
    for _ in range(FIXED_STEPS):
        j = base + _trailing_zeros(mask | top)  # an empty mask points at the block's last item, not counted
        near[count] = (j << DIST_BITS) | np.int64(dist[j])
        count += 1 if mask != zero else 0
        mask &= mask - one
    while mask:
        j = base + _trailing_zeros(mask)
        near[count] = (j << DIST_BITS) | np.int64(dist[j])
        count += 1
        mask &= mask - one
    return count


@njit(cache=True, inline="always")
def _block_mask(dist: np.ndarray, base: int, limit: int) -> np.uint64:
    """Bit b set when item ``base + b`` lies within ``limit`` (64 compares, no branch)."""
    mask = np.uint64(0)
    for b in range(64):
        mask |= np.uint64((dist[base + b] & DIST_MASK) <= limit) << np.uint64(b)
    return mask


@njit(cache=True)
def _near_items(dist: np.ndarray, limit: int, near: np.ndarray) -> int:
    """``near[:count]`` = ``(j << DIST_BITS) | dist[j]`` for the items j at distance <= ``limit``, in index
    order, from distance entries already computed; returns ``count``. Per 64 items, the kept ones as the bits of
    a mask, then one store per kept item (:func:`_extract`): the work follows the candidates (a few percent of
    the database), not the items."""
    n = dist.shape[0]
    full = n - n % 64
    count = 0
    for base in range(0, full, 64):
        count = _extract(dist, base, _block_mask(dist, base, limit), near, count)
    for j in range(full, n):
        near[count] = (j << DIST_BITS) | np.int64(dist[j])
        count += 1 if (dist[j] & DIST_MASK) <= limit else 0
    return count


@njit(cache=True)
def _scan(
    q: np.ndarray,
    db: np.ndarray,
    ql: np.ndarray,
    dl: np.ndarray,
    i: int,
    limit: int,
    dist: np.ndarray,
    near: np.ndarray,
) -> int:
    """One pass over the database for query ``i``: every distance entry into ``dist`` (:func:`_all_distances`)
    and the candidates within ``limit`` into ``near`` (:func:`_near_items`); returns their count. Codes and labels
    of one word each are scanned 64 items at a time, distances then mask while the block is in L1."""
    if db.shape[1] != 1 or dl.shape[1] != 1:
        _all_distances(q, db, ql, dl, i, dist)
        return _near_items(dist, limit, near)
    n = db.shape[0]
    full = n - n % 64
    qi = q[i, 0]
    qli = ql[i, 0]
    rel = np.uint16(REL_BIT)
    zero = np.uint16(0)
    count = 0
    for base in range(0, full, 64):
        for j in range(base, base + 64):
            dist[j] = np.uint16(_popcount(qi ^ db[j, 0])) | (rel if (qli & dl[j, 0]) != 0 else zero)
        count = _extract(dist, base, _block_mask(dist, base, limit), near, count)
    for j in range(full, n):
        dist[j] = np.uint16(_popcount(qi ^ db[j, 0])) | (rel if (qli & dl[j, 0]) != 0 else zero)
        near[count] = (j << DIST_BITS) | np.int64(dist[j])
        count += 1 if (dist[j] & DIST_MASK) <= limit else 0
    return count


@njit(cache=True)
def _place(
    near: np.ndarray,
    count: int,
    dstar: int,
    start: np.ndarray,
    relpos: np.ndarray,
    depth: int,
) -> None:
    """Rank the candidates ``near[:count]`` (index order): one at distance d <= ``dstar`` takes position
    ``start[d]++`` and, below ``depth``, records its relevance (its :data:`REL_BIT`) in ``relpos``; the others go
    to the spare slot ``start[-1]`` and ``relpos[depth]``. No branch depends on the data."""
    spare = start.shape[0] - 1
    for t in range(count):
        v = near[t]
        d = v & DIST_MASK
        ranked = d <= dstar
        slot = d if ranked else spare
        p = start[slot]
        start[slot] = p + 1
        kept = p if p < depth else depth
        relpos[kept if ranked else depth] = (v >> 15) & 1


@njit(cache=True)
def _rank_query(
    q: np.ndarray,
    db: np.ndarray,
    ql: np.ndarray,
    dl: np.ndarray,
    i: int,
    topk: int,
    depth: int,
    cutoffs: np.ndarray,
    ap: np.ndarray,
    hits: np.ndarray,
    dist: np.ndarray,
    near: np.ndarray,
    relpos: np.ndarray,
    hist: np.ndarray,
    start: np.ndarray,
) -> None:
    """One query of :func:`ranked_relevance` with the block's scratch arrays (``dist`` and ``near`` hold N)."""
    nbins = hist.shape[0] - 1
    limit = _sample_threshold(q, db, i, depth, nbins)
    count = _scan(q, db, ql, dl, i, limit, dist, near)
    while count < depth:  # the sample misled: widen (the whole database holds depth items)
        limit = min(limit + 1, nbins - 1)
        count = _near_items(dist, limit, near)
    hist[:] = 0
    for t in range(count):
        hist[near[t] & DIST_MASK] += 1
    cum = 0
    dstar = limit
    for d in range(limit + 1):
        start[d] = cum
        cum += hist[d]
        if cum >= depth:
            dstar = d
            break
    start[nbins] = 0
    relpos[:] = 0
    _place(near, count, dstar, start, relpos, depth)
    _ap_and_hits(relpos[:depth], topk, cutoffs, ap, hits, i)


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
    blocks: int,
) -> None:
    """Per query: AP@topk under the stable order, and relevant items among the first ``cutoffs[c]`` ranks.

    ``q``/``db``: packed codes (uint64 words); ``ql``/``dl``: packed labels. ``cutoffs`` ascending, each in
    1..N; ``topk`` in 1..N. Outputs ``ap`` (Q,) and ``hits`` (Q, len(cutoffs)). ``blocks``: how many blocks of
    queries to run as parallel tasks, each with 10 bytes of scratch per item; the results do not depend on it.

    One pass over the database per query: a threshold from a strided sample (:func:`_sample_threshold`), then
    every item's distance, the items within the threshold kept as candidates (:func:`_near_items`; a threshold
    that keeps fewer than the ranking depth is widened and the pass repeated). The candidates' histogram gives
    d*, the distance of the last ranked item; candidates at distance d <= d* take rank ``start[d]++`` in index
    order, branch-free (:func:`_place`), and their relevance is read there. Queries run in blocks, one per
    parallel task, which reuse their scratch arrays; each query's work is a plain compiled function
    (:func:`_rank_query`), which compiles to tighter loops than a parallel loop's body.
    """
    nq = q.shape[0]
    n = db.shape[0]
    nbins = 64 * q.shape[1] + 1
    ncut = cutoffs.shape[0]
    depth = topk
    if ncut > 0 and cutoffs[ncut - 1] > depth:
        depth = cutoffs[ncut - 1]
    blocks = max(1, min(nq, blocks))
    for b in prange(blocks):
        dist = np.empty(n, np.uint16)
        near = np.empty(n, np.int64)
        relpos = np.empty(depth + 1, np.uint8)
        hist = np.empty(nbins + 1, np.int64)
        start = np.empty(nbins + 1, np.int64)
        for i in range(b * nq // blocks, (b + 1) * nq // blocks):
            _rank_query(q, db, ql, dl, i, topk, depth, cutoffs, ap, hits, dist, near, relpos, hist, start)


@njit(cache=True, inline="always")
def _ap_and_hits(
    relpos: np.ndarray, topk: int, cutoffs: np.ndarray, ap: np.ndarray, hits: np.ndarray, i: int
) -> None:
    """AP@topk of query ``i`` from the relevance of its ranked positions (``relpos[p]`` for rank p + 1), and
    its relevant items among the first ``cutoffs[c]`` ranks. No branch on relevance (half the ranks of a good
    query are relevant, at random: a branch would mispredict on many of them)."""
    found = 0
    total = 0.0
    for p in range(topk):
        r = relpos[p]
        found += r
        total += (r * found) / (p + 1.0)
    ap[i] = total / found if found > 0 else 0.0
    ncut = cutoffs.shape[0]
    if ncut == 0:
        return
    found = 0
    c = 0
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
    blocks: int,
) -> None:
    """The second pass of the streamed ranking, over one database chunk (chunks come in index order).

    Per query ``i``: every chunk item at distance ``d <= dstar[i]`` (collected without branches,
    :func:`_near_items`) takes rank position ``start[i, d]`` (then incremented), so items at equal distance keep
    index order; a position below the depth ``relpos.shape[1]`` records the item's relevance in
    ``relpos[i, p]``. ``start`` carries over between chunks (and, offset by the items of lower ranks, between
    database shards). ``blocks``: blocks of queries run as parallel tasks, each with its own scratch.
    """
    nq = q.shape[0]
    n = db.shape[0]
    depth = relpos.shape[1]
    blocks = max(1, min(nq, blocks))
    for b in prange(blocks):
        dist = np.empty(n, np.uint16)
        near = np.empty(n, np.int64)
        for i in range(b * nq // blocks, (b + 1) * nq // blocks):
            count = _scan(q, db, ql, dl, i, dstar[i], dist, near)
            for t in range(count):
                v = near[t]
                d = v & DIST_MASK
                p = start[i, d]
                start[i, d] = p + 1
                if p < depth:
                    relpos[i, p] = (v >> 15) & 1


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
        for j in range(n):  # without a branch: relevance is close to a coin flip for many queries
            rel[j & 1, dist[j]] += _relevant(ql, dl, i, j)
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
