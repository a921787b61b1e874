"""Retrieval metrics at NUS-WIDE scale: robusthash's compiled kernels against the literature's per-query loop.

2,100 queries, 193,734 database codes, 64 bits, 21 labels (multi-label). Codes are structured like a trained
model's (each item: the sign of the sum of its labels' centre codes, then 25% of bits flipped), so there are
many Hamming ties. With the `faiss` extra installed, faiss' exact binary k-NN (IndexBinaryFlat) is timed for
mAP@5000 too, the compiled alternative to the numba kernels. Each measurement runs in a fresh
process, which reports its wall time and how far its peak resident memory rose above the resident memory it
had with the inputs loaded (VmHWM - VmRSS).

    python benchmarks/bench_metrics.py            # writes benchmarks/results/metrics.json
    python benchmarks/bench_metrics.py --large    # 10,000,000 codes: benchmarks/results/metrics-10m.json
    python benchmarks/bench_metrics.py --floor    # mAP@5000 per pair against the popcount floor: metrics-floor.json

``--floor``: on the same packed codes, in one process, interleaved (5 rounds, the fastest of each), at 1 and 2
threads: robusthash's mAP@5000 kernel against the floor, an XOR + popcount + distance histogram (four lanes) of
every (query, item) pair and nothing else, in nanoseconds per pair.

``--large``: a 10,000,000-code database (64 bits, 21 labels, the same structure, generated in chunks straight
into bit-packed memory-mapped files), 2,100 queries: exact mAP@5000 streamed over the memory-mapped database
(``metrics.streaming_report``, what ``robusthash evaluate --store`` runs), the in-memory kernel on the same
packed arrays as a cross-check, and faiss' IndexBinaryFlat k-NN, each in a fresh process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COMMAND = "python benchmarks/bench_metrics.py"
RESULTS = Path(__file__).parent / "results" / "metrics.json"
NS = list(range(100, 1001, 100))


def make_data(folder: Path, nq: int, nd: int, bits: int, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.choice([-1, 1], (classes, bits))
    popularity = rng.dirichlet(np.ones(classes) * 0.7)

    def items(n):
        labels = np.zeros((n, classes), np.int8)
        counts = rng.choice([1, 2, 3], n, p=[0.5, 0.35, 0.15])
        for i, k in enumerate(counts):
            labels[i, rng.choice(classes, k, replace=False, p=popularity)] = 1
        codes = np.where(labels @ centres + rng.normal(0, 0.5, (n, bits)) >= 0, 1, -1)
        flip = rng.random((n, bits)) < 0.25
        return np.where(flip, -codes, codes).astype(np.int8), labels

    for name, n in (("query", nq), ("db", nd)):
        codes, labels = items(n)
        np.save(folder / f"{name}_codes.npy", codes)
        np.save(folder / f"{name}_labels.npy", labels)


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (ru_maxrss would include the parent's peak, inherited at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def make_large(
    folder: Path, nq: int, nd: int, bits: int, classes: int, seed: int, block: int = 1_000_000
) -> None:
    """Packed codes and labels (uint64 words) of the same structure as :func:`make_data`, vectorised and written
    block by block into ``.npy`` memory maps (labels drawn without replacement by the Gumbel top-k trick)."""
    from robusthash.metrics import pack_bits

    rng = np.random.default_rng(seed)
    centres = rng.choice([-1, 1], (classes, bits)).astype(np.float32)
    log_pop = np.log(rng.dirichlet(np.ones(classes) * 0.7)).astype(np.float32)
    for name, n in (("query", nq), ("db", nd)):
        codes = np.lib.format.open_memmap(folder / f"{name}_codes.npy", "w+", np.uint64, (n, 1))
        labels = np.lib.format.open_memmap(folder / f"{name}_labels.npy", "w+", np.uint64, (n, 1))
        for start in range(0, n, block):
            m = min(block, n - start)
            counts = rng.choice([1, 2, 3], m, p=[0.5, 0.35, 0.15])
            keys = log_pop + rng.gumbel(size=(m, classes)).astype(np.float32)
            rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
            multi_hot = rank < counts[:, None]
            signal = multi_hot.astype(np.float32) @ centres + rng.normal(0, 0.5, (m, bits)).astype(np.float32)
            positive = (signal >= 0) ^ (rng.random((m, bits), dtype=np.float32) < 0.25)
            codes[start : start + m] = pack_bits(positive)
            labels[start : start + m] = pack_bits(multi_hot)
        codes.flush()
        labels.flush()


def _large_child(folder: str, who: str, conn) -> None:
    q, d, ql, dl = (
        np.load(Path(folder) / f"{n}.npy", mmap_mode="r")
        for n in ("query_codes", "db_codes", "query_labels", "db_labels")
    )
    q, ql = np.array(q), np.array(ql)
    from robusthash import metrics

    if who != "faiss":  # compile outside the timing (numba caches to disk after the first run)
        metrics.streaming_statistics(q[:2], ql[:2], d[:1000], dl[:1000], 64, topk=10)
    _reset_peak()
    base = _status_mb("VmRSS")
    start = time.perf_counter()
    if who == "streamed":
        out = metrics.streaming_statistics(q, ql, d, dl, 64, topk=5000, histograms=False).ap
    elif (
        who == "streamed-report"
    ):  # + PR curve by radius and P@N / R@N (relevance histograms: one more count)
        out = metrics.streaming_report(q, ql, d, dl, 64, topk=5000)["ap"]
    elif who == "in-memory":
        # the one-pass kernel on the packed arrays (no unpacking)
        out = metrics.retrieval.packed_ranking(
            q, np.asarray(d), ql, np.asarray(dl), 5000, np.zeros(0, np.int64)
        ).ap
    else:
        out = faiss_packed_map(q, d, ql, dl, 5000)
    seconds = time.perf_counter() - start
    conn.send(
        {
            "seconds": seconds,
            "peak_mb": _status_mb("VmHWM"),
            "peak_extra_mb": _status_mb("VmHWM") - base,
            "value": np.asarray(out).tolist(),
        }
    )


def faiss_packed_map(q, d, ql, dl, topk):
    """mAP@topk from faiss' IndexBinaryFlat on packed uint64 codes (bytes in the same little-endian bit order)."""
    import faiss

    index = faiss.IndexBinaryFlat(64 * d.shape[1])
    for start in range(0, len(d), 1_000_000):
        index.add(np.ascontiguousarray(d[start : start + 1_000_000]).view(np.uint8))
    _, ranked = index.search(np.ascontiguousarray(q).view(np.uint8), topk)
    aps = np.zeros(len(q))
    for s in range(0, len(q), 100):
        rel = (ql[s : s + 100, None, :] & np.asarray(dl)[ranked[s : s + 100]]).any(-1)
        hits = np.cumsum(rel, axis=1)
        aps[s : s + 100] = ((hits / np.arange(1, topk + 1)) * rel).sum(1) / np.maximum(hits[:, -1], 1)
    return aps


def large(args: argparse.Namespace) -> None:
    from robusthash.runtime import environment

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        make_large(folder, args.queries, args.large_database, 64, 21, seed=0)
        print(
            f"generated {args.large_database:,} packed codes in {time.perf_counter() - began:.0f} s",
            flush=True,
        )
        rows = {}
        for who in ["streamed", "streamed-report", "in-memory"] + (["faiss"] if _has_faiss() else []):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_large_child, args=(str(folder), who, child))
            proc.start()
            rows[who] = r = parent.recv()
            proc.join()
            print(
                f"{who:10s} mAP@5000 {np.mean(r['value']):.6f}  {r['seconds']:8.2f} s   peak RSS "
                f"{r['peak_mb']:8.1f} MiB (+{r['peak_extra_mb']:.1f} MiB above the loaded inputs)",
                flush=True,
            )
    ap = {k: np.array(v.pop("value")) for k, v in rows.items()}
    summary = {
        "map_at_5000": float(ap["streamed"].mean()),
        "streamed_equals_in_memory": bool(np.array_equal(ap["streamed"], ap["in-memory"])),
        "report_equals_streamed": bool(np.array_equal(ap["streamed"], ap["streamed-report"])),
        "streamed_seconds": rows["streamed"]["seconds"],
        "streamed_peak_mib": rows["streamed"]["peak_mb"],
        "goal": "exact mAP@5000 in <= 60 s and <= 2 GiB peak on 2 CPU cores",
    }
    if "faiss" in ap:
        summary["faiss_queries_differing"] = int((np.abs(ap["faiss"] - ap["streamed"]) > 1e-12).sum())
        summary["faiss_max_abs_diff"] = float(np.abs(ap["faiss"] - ap["streamed"]).max())
        summary["speedup_vs_faiss"] = rows["faiss"]["seconds"] / rows["streamed"]["seconds"]
    else:
        print("faiss not installed (pip install '.[faiss]'): no faiss row", flush=True)
    doc = {
        "command": COMMAND + " --large",
        "queries": args.queries,
        "database": args.large_database,
        "bits": 64,
        "labels": 21,
        "environment": environment("cpu"),
        "timings": rows,
        "summary": summary,
    }
    out = Path(args.out).with_name("metrics-10m.json") if args.out == str(RESULTS) else Path(args.out)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"command: {COMMAND} --large")


def floor_kernel():
    """The floor: per query, XOR + popcount of every database word and a four-lane distance histogram; each
    query a plain compiled function called from the parallel loop (as robusthash's kernel is: a parallel loop's
    own body compiles to slower loops)."""
    from numba import njit, prange

    from robusthash.metrics.kernels import _popcount

    @njit(cache=False)
    def one_query(q, db, i, hist):
        n = db.shape[0]
        m = n - n % 4
        h = np.zeros((4, hist.shape[1]), np.int64)
        qi = q[i, 0]
        for j in range(0, m, 4):
            h[0, _popcount(qi ^ db[j, 0])] += 1
            h[1, _popcount(qi ^ db[j + 1, 0])] += 1
            h[2, _popcount(qi ^ db[j + 2, 0])] += 1
            h[3, _popcount(qi ^ db[j + 3, 0])] += 1
        for j in range(m, n):
            h[0, _popcount(qi ^ db[j, 0])] += 1
        for d in range(hist.shape[1]):
            hist[i, d] = h[0, d] + h[1, d] + h[2, d] + h[3, d]

    @njit(parallel=True, cache=False)
    def floor(q, db, hist):
        for i in prange(q.shape[0]):
            one_query(q, db, i, hist)

    return floor


def floor_comparison(args: argparse.Namespace) -> None:
    """mAP@5000 against the popcount floor, ns per pair, interleaved at 1 and 2 threads."""
    import numba

    from robusthash.metrics import pack_bits
    from robusthash.metrics.retrieval import packed_ranking
    from robusthash.runtime import environment

    with tempfile.TemporaryDirectory() as tmp:
        make_data(Path(tmp), args.queries, args.database, 64, 21, seed=0)
        qc, dc, qlab, dlab = _load(Path(tmp))
    q, d, ql, dl = pack_bits(qc == 1), pack_bits(dc == 1), pack_bits(qlab == 1), pack_bits(dlab == 1)
    floor = floor_kernel()
    hist = np.zeros((len(q), 65), np.int64)
    none = np.zeros(0, np.int64)
    floor(q[:2], d, hist[:2])
    packed_ranking(q[:2], d, ql[:2], dl, 5000, none)
    pairs = len(q) * len(d)
    rows = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        best = {"floor": np.inf, "map@5000": np.inf}
        for _ in range(args.rounds):
            for name in best:
                start = time.perf_counter()
                if name == "floor":
                    floor(q, d, hist)
                else:
                    packed_ranking(q, d, ql, dl, 5000, none)
                best[name] = min(best[name], time.perf_counter() - start)
        row = {
            "threads": threads,
            "floor_ns_per_pair": best["floor"] / pairs * 1e9,
            "map_ns_per_pair": best["map@5000"] / pairs * 1e9,
            "ratio": best["map@5000"] / best["floor"],
            "floor_seconds": best["floor"],
            "map_seconds": best["map@5000"],
        }
        rows.append(row)
        print(
            f"{threads} thread(s): floor {row['floor_ns_per_pair']:.3f} ns/pair, mAP@5000 "
            f"{row['map_ns_per_pair']:.3f} ns/pair: {row['ratio']:.2f}x the floor",
            flush=True,
        )
    doc = {
        "command": COMMAND + " --floor",
        "queries": args.queries,
        "database": args.database,
        "bits": 64,
        "labels": 21,
        "rounds": args.rounds,
        "environment": environment("cpu"),
        "rows": rows,
    }
    out = RESULTS.with_name("metrics-floor.json") if args.out == str(RESULTS) else Path(args.out)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"rows in {out}; command: {COMMAND} --floor")


def _load(folder: Path):
    return [np.load(folder / f"{n}.npy") for n in ("query_codes", "db_codes", "query_labels", "db_labels")]


# ------------------------------------------------------------------ the literature's loops (float32 codes)
def loop_map(q, d, ql, dl, topk, stable):
    """CalcTopMap of the DHTA / ProS-GAN / CgAT code, with float32 codes (its fastest case)."""
    q, d = q.astype(np.float32), d.astype(np.float32)
    ql, dl = ql.astype(np.float32), dl.astype(np.float32)
    kind = "stable" if stable else "quicksort"
    aps = np.zeros(len(q))
    for i in range(len(q)):
        gnd = (ql[i] @ dl.T > 0).astype(np.float32)
        hamm = 0.5 * (d.shape[1] - d @ q[i])
        tgnd = gnd[np.argsort(hamm, kind=kind)][:topk]
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.flatnonzero(tgnd == 1) + 1.0
        aps[i] = np.mean(count / tindex)
    return aps


def loop_pr(q, d, ql, dl):
    """Per-query precision and recall inside each Hamming radius (the usual pr_curve loop)."""
    q, d = q.astype(np.float32), d.astype(np.float32)
    ql, dl = ql.astype(np.float32), dl.astype(np.float32)
    bits = d.shape[1]
    radii = np.arange(bits + 1)
    p_sum, p_cnt, r_sum, r_cnt = np.zeros(bits + 1), np.zeros(bits + 1), np.zeros(bits + 1), 0
    for i in range(len(q)):
        gnd = ql[i] @ dl.T > 0
        hamm = 0.5 * (bits - d @ q[i])
        inside = hamm[None, :] <= radii[:, None]
        retrieved = inside.sum(1)
        hits = (inside & gnd[None, :]).sum(1)
        ok = retrieved > 0
        p_sum[ok] += hits[ok] / retrieved[ok]
        p_cnt += ok
        if gnd.sum():
            r_sum += hits / gnd.sum()
            r_cnt += 1
    return p_sum / np.maximum(p_cnt, 1), r_sum / max(r_cnt, 1)


def loop_pn(q, d, ql, dl):
    q, d = q.astype(np.float32), d.astype(np.float32)
    ql, dl = ql.astype(np.float32), dl.astype(np.float32)
    out = np.zeros(len(NS))
    for i in range(len(q)):
        gnd = ql[i] @ dl.T > 0
        order = np.argsort(0.5 * (d.shape[1] - d @ q[i]), kind="stable")
        hits = np.cumsum(gnd[order[: NS[-1]]])
        out += hits[np.array(NS) - 1] / np.array(NS)
    return out / len(q)


# ------------------------------------------------------------------ faiss (the `faiss` extra)
def faiss_map(q, d, ql, dl, topk):
    """mAP@topk from faiss' exact binary k-NN (IndexBinaryFlat), the alternative to the numba kernels.

    faiss does not document how it orders (and, at the k-th distance, selects) tied items, so the summary counts
    the queries whose AP differs from the stable rule's (none in the committed run). The AP arithmetic on its
    ranking is vectorised numpy in blocks of 100 queries.
    """
    import faiss

    index = faiss.IndexBinaryFlat(d.shape[1])
    index.add(np.packbits(d > 0, axis=1))
    _, ranked = index.search(np.packbits(q > 0, axis=1), topk)
    aps = np.zeros(len(q))
    for s in range(0, len(q), 100):
        rel = (ql[s : s + 100, None, :] & dl[ranked[s : s + 100]]).any(-1)
        hits = np.cumsum(rel, axis=1)
        precision = hits / np.arange(1, topk + 1)
        aps[s : s + 100] = (precision * rel).sum(1) / np.maximum(hits[:, -1], 1)
    return aps


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ robusthash
def ours(task, q, d, ql, dl):
    from robusthash import metrics

    if task == "map":
        return metrics.average_precision(q, d, ql, dl, topk=5000)
    if task == "pr":
        pr = metrics.precision_recall_curve(q, d, ql, dl)
        return pr["precision"], pr["recall"]
    return metrics.precision_at_n(q, d, ql, dl, NS)


def _child(folder: str, who: str, task: str, conn) -> None:
    arrays = _load(Path(folder))
    if who == "ours":  # compile outside the timing (numba caches to disk after the first run)
        ours(task, arrays[0][:2], *arrays[1:2], arrays[2][:2], arrays[3])
    _reset_peak()
    base = _status_mb("VmRSS")
    start = time.perf_counter()
    if who == "ours":
        out = ours(task, *arrays)
    elif who == "faiss":
        out = faiss_map(*arrays, 5000)
    elif task == "map":
        out = loop_map(*arrays, 5000, stable=who == "loop-stable")
    elif task == "pr":
        out = loop_pr(*arrays)
    else:
        out = loop_pn(*arrays)
    seconds = time.perf_counter() - start
    conn.send(
        {
            "seconds": seconds,
            "peak_extra_mb": _status_mb("VmHWM") - base,
            "value": [np.asarray(o).tolist() for o in out]
            if isinstance(out, tuple)
            else np.asarray(out).tolist(),
        }
    )


def measure(folder: Path, who: str, task: str) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(str(folder), who, task, child))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=2100)
    parser.add_argument("--database", type=int, default=193_734)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--large", action="store_true", help="the 10,000,000-code benchmark instead")
    parser.add_argument("--large-database", type=int, default=10_000_000)
    parser.add_argument("--floor", action="store_true", help="mAP@5000 against the popcount floor instead")
    parser.add_argument(
        "--rounds", type=int, default=5, help="--floor: interleaved rounds (the fastest counts)"
    )
    parser.add_argument(
        "--tmp", default=None, help="folder for the generated memory maps (default: the system's)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    if args.large:
        large(args)
        return
    if args.floor:
        floor_comparison(args)
        return
    from robusthash.runtime import environment

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, args.queries, args.database, 64, 21, seed=0)
        rows = {}
        with_faiss = _has_faiss()
        runs = [
            ("ours", "map"),
            ("loop-stable", "map"),
            ("loop", "map"),
            ("ours", "pr"),
            ("loop", "pr"),
            ("ours", "pn"),
            ("loop", "pn"),
        ] + ([("faiss", "map")] if with_faiss else [])
        if not with_faiss:
            print("faiss not installed (pip install '.[faiss]'): skipping the faiss comparison", flush=True)
        for who, task in runs:
            rows[f"{who}/{task}"] = r = measure(folder, who, task)
            print(
                f"{who:12s} {task:4s} {r['seconds']:9.2f} s   peak +{r['peak_extra_mb']:8.1f} MiB", flush=True
            )
    ap_ours = np.array(rows["ours/map"]["value"])
    ap_stable = np.array(rows["loop-stable/map"]["value"])
    ap_quick = np.array(rows["loop/map"]["value"])
    pr_ours, pr_loop = rows["ours/pr"]["value"], rows["loop/pr"]["value"]
    summary = {
        "map_at_5000": float(ap_ours.mean()),
        "identical_to_stable_loop": bool(np.allclose(ap_ours, ap_stable, rtol=0, atol=1e-12)),
        "max_abs_diff_stable_loop": float(np.abs(ap_ours - ap_stable).max()),
        "map_quicksort_loop": float(ap_quick.mean()),
        "pr_max_abs_diff": float(
            max(
                np.nanmax(np.abs(np.array(pr_ours[0]) - pr_loop[0])),
                np.abs(np.array(pr_ours[1]) - pr_loop[1]).max(),
            )
        ),
        "pn_max_abs_diff": float(np.abs(np.array(rows["ours/pn"]["value"]) - rows["loop/pn"]["value"]).max()),
        "speedup_map_vs_loop": rows["loop/map"]["seconds"] / rows["ours/map"]["seconds"],
        "speedup_map_vs_stable_loop": rows["loop-stable/map"]["seconds"] / rows["ours/map"]["seconds"],
        "speedup_pr": rows["loop/pr"]["seconds"] / rows["ours/pr"]["seconds"],
        "speedup_pn": rows["loop/pn"]["seconds"] / rows["ours/pn"]["seconds"],
    }
    if "faiss/map" in rows:
        ap_faiss = np.array(rows["faiss/map"]["value"])
        summary["faiss_map_at_5000"] = float(ap_faiss.mean())
        summary["faiss_max_abs_diff_stable_loop"] = float(np.abs(ap_faiss - ap_stable).max())
        summary["faiss_queries_differing"] = int((np.abs(ap_faiss - ap_stable) > 1e-12).sum())
        summary["speedup_map_vs_faiss"] = rows["faiss/map"]["seconds"] / rows["ours/map"]["seconds"]
    for key in rows:
        rows[key].pop("value")
    doc = {
        "command": COMMAND,
        "queries": args.queries,
        "database": args.database,
        "bits": 64,
        "labels": 21,
        "environment": environment("cpu"),
        "timings": rows,
        "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"command: {COMMAND}")


if __name__ == "__main__":
    main()
