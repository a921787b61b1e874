"""Torch CPU threads on an idle and on a busy machine: which default is never slower than one thread?

    python benchmarks/bench_threads.py --markdown docs/threads.md     # ~5 min on 2 CPU cores; run it alone

PgA (20 steps) on 64 seeded queries of the zoo's undefended model, at 1 thread, at every core, and at ``auto``
(:func:`robusthash.runtime.set_threads`: the cores other work leaves idle), each in a fresh process, the
three interleaved ``--rounds`` times; first with nothing else running ("idle"), then beside one competing
single-threaded process that multiplies matrices without end ("busy": another job on the machine, started
``--warm`` seconds before so that the load average sees it). A row keeps each setting's fastest wall-clock time.
Rows go to benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, Rows

COMMAND = "python benchmarks/bench_threads.py"
KEY = ("condition", "threads")
WORK = """
import sys, time, torch
from robusthash.attacks import create_attack
from robusthash.data import load_dataset
from robusthash.robustness import Banks, query_images, query_subset
from robusthash.runtime import set_threads
from robusthash.app.zoo import load_model
count = set_threads(sys.argv[1] if sys.argv[1] == "auto" else int(sys.argv[1]))
data = load_dataset("fashion-mnist")
model = load_model("fashion-mnist-dph-32")
banks = Banks.of(model, data, torch.device("cpu"))
indices = query_subset(data, 64, 0)
images, labels = query_images(data, indices)
attack = create_attack("pga", model, reference=banks.reference, steps=20)
began = time.perf_counter()
attack(images, labels, indices=indices)
print(count, time.perf_counter() - began)
"""
LOAD = (
    "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"
)


def timed(threads: str) -> tuple[int, float]:
    """(threads set, seconds of the attack) of one fresh process."""
    out = subprocess.run([sys.executable, "-c", WORK, threads], capture_output=True, text=True, check=True)
    count, seconds = out.stdout.split()[-2:]
    return int(count), float(seconds)


def measure(rows: Rows, condition: str, rounds: int) -> None:
    settings = ["1", str(len(os.sched_getaffinity(0))), "auto"]
    seconds: dict[str, list[float]] = {s: [] for s in settings}
    chosen: dict[str, int] = {}
    for _ in range(rounds):
        for s in settings:
            chosen[s], t = timed(s)
            seconds[s].append(t)
    for s in settings:
        row = {
            "condition": condition,
            "threads": s,
            "threads_set": chosen[s],
            "seconds": min(seconds[s]),
            "all_seconds": seconds[s],
            "rounds": rounds,
            "load_average": os.getloadavg()[0],
        }
        rows.add(row)
        print(f"{condition:5s} threads {s:4s} (set {chosen[s]}): {row['seconds']:.2f} s", flush=True)


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Torch CPU threads, idle and busy",
        "",
        f"`{COMMAND}` (rows: `benchmarks/results/threads.json`). "
        "PgA, 20 steps, 64 queries, zoo model; fastest of the rounds, each setting in a fresh process, "
        "interleaved. Busy: beside one single-threaded process multiplying matrices.",
        "",
        "| condition | threads | threads set | seconds | vs 1 thread |",
        "|---|---|---|---|---|",
    ]
    for condition in ("idle", "busy"):
        mine = {r["threads"]: r for r in rows if r["condition"] == condition}
        if "1" not in mine:
            continue
        for s, r in mine.items():
            lines.append(
                f"| {condition} | {s} | {r['threads_set']} | {r['seconds']:.2f} | "
                f"{r['seconds'] / mine['1']['seconds']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", type=float, default=10.0, help="seconds the busy load runs before timing")
    parser.add_argument("--conditions", default="idle,busy")
    parser.add_argument("--out", default=str(RESULTS / "threads.json"))
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for condition in args.conditions.split(","):
        load = subprocess.Popen([sys.executable, "-c", LOAD]) if condition == "busy" else None
        try:
            if load is not None:
                time.sleep(args.warm)
            measure(rows, condition, args.rounds)
        finally:
            if load is not None:
                load.kill()
    rows.publish(markdown(rows.rows), args.markdown)
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
