"""CSQ's hash centers beyond 2K classes: robusthash's all-random draw, DeepHash-pytorch's Hadamard rows plus
random ones, and the default that keeps the farther of the two (issue 25, item 5).

    python benchmarks/bench_csq_centers.py --markdown docs/csq-centers.md     # seconds

For each (K, C) with C > 2K (K a power of two), 10 generator seeds: the minimum and the mean pairwise Hamming
distance between the C centers under each rule. Rows go to benchmarks/results/csq_centers.json.
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import torch
from common import RESULTS, Rows

from robusthash.losses.csq import CENTER_RULES, center_distances, hash_centers

COMMAND = "python benchmarks/bench_csq_centers.py"
KEY = ("bits", "classes", "rule")
CASES = ((16, 50), (32, 80), (32, 100), (64, 200))
SEEDS = range(10)


def measure(rows: Rows, bits: int, classes: int, rule: str) -> dict:
    minima, means = [], []
    for seed in SEEDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random rule warns below K/4, which is what is measured
            centers = hash_centers(classes, bits, torch.Generator().manual_seed(seed), rule=rule)
        off = center_distances(centers)
        minima.append(float(off.min()))
        means.append(float(off.mean()))
    row = {
        "bits": bits,
        "classes": classes,
        "rule": rule,
        "seeds": len(minima),
        "min_distance_mean": statistics.mean(minima),
        "min_distance_low": min(minima),
        "min_distance_high": max(minima),
        "mean_distance": statistics.mean(means),
    }
    rows.add(row)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "# CSQ centers beyond 2K classes",
        "",
        f"Produced by `{COMMAND} --markdown docs/csq-centers.md` (rows: `benchmarks/results/csq_centers.json`). "
        f"Pairwise Hamming distance between the C centers, {len(SEEDS)} generator seeds per cell.",
        "",
        "| K | C | rule | min distance (mean over seeds) | range | mean distance |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["bits"], r["classes"], CENTER_RULES.index(r["rule"]))):
        lines.append(
            f"| {r['bits']} | {r['classes']} | {r['rule']} | {r['min_distance_mean']:.1f} | "
            f"{r['min_distance_low']:.0f}-{r['min_distance_high']:.0f} | {r['mean_distance']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(RESULTS / "csq_centers.json"))
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for bits, classes in CASES:
        for rule in CENTER_RULES:
            r = measure(rows, bits, classes, rule)
            print(
                f"K={bits} C={classes} {rule:16s} min distance {r['min_distance_mean']:.1f} "
                f"({r['min_distance_low']:.0f}-{r['min_distance_high']:.0f}), mean {r['mean_distance']:.2f}",
                flush=True,
            )
    rows.publish(markdown(rows.rows), args.markdown)
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
