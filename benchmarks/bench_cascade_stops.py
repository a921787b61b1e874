"""Best-iterate keeping and plateau stops in the robust cascade's white-box stages: stronger, cheaper, or neither?

    python benchmarks/bench_cascade_stops.py --markdown docs/cascade_stops.md    # resumable; ~15 min on 2 cores

For each zoo model (undefended DPH-32 and its ATRDH, PgA-AT and CgAT versions, Fashion-MNIST), on the same seeded
100 queries (``--queries``, subset ``--query-seed``), eps 8/255, mAP@1000: PgA (T = 100) and the cascade's four
white-box stages (the recipe without its gradient-free stage, which these options do not touch) under each
variant of :meth:`robusthash.attacks.cascade.RobustCascade.descend`:

- ``last``: each stage's last iterate, scored once (the recipe until this benchmark);
- ``best-N``: every N steps the iterate is scored; a query keeps its best-AP iterate and stops at AP 0 (``best-10``
  is the recipe since);
- ``stop-N-pP``: as ``best-N``, and a query also stops after P scorings in a row without a lower AP.

All variants and PgA run interleaved, ``--rounds`` times, on one thread; a row keeps the fastest time of each.
Rows (per-query AP included) go to benchmarks/results/cascade_stops.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, Rows, dataset

from robusthash.app.zoo import load_model
from robusthash.attacks import create_attack
from robusthash.attacks.cascade import RECIPE
from robusthash.robustness import Banks, query_images, query_subset

COMMAND = "python benchmarks/bench_cascade_stops.py"
KEY = ("model", "variant", "queries", "query_seed")
MODELS = [
    "fashion-mnist-dph-32",
    "fashion-mnist-dph-32-atrdh",
    "fashion-mnist-dph-32-pga-at",
    "fashion-mnist-dph-32-cgat",
]
WHITE_BOX = [s for s in RECIPE if s != "square"]
# label -> cascade options (None: PgA, the cost unit)
VARIANTS: dict[str, dict | None] = {
    "pga": None,
    "last": {"check_every": None},
    "best-10": {"check_every": 10},
    "stop-10-p1": {"check_every": 10, "patience": 1},
    "stop-10-p2": {"check_every": 10, "patience": 2},
    "stop-20-p1": {"check_every": 20, "patience": 1},
}


def measure(rows: Rows, model_name: str, queries: int, query_seed: int, rounds: int) -> None:
    """Every variant on one model, interleaved ``rounds`` times; one row per variant."""
    todo = [
        v
        for v in VARIANTS
        if not rows.has(model=model_name, variant=v, queries=queries, query_seed=query_seed)
    ]
    if not todo:
        return
    data = dataset("fashion-mnist")
    model = load_model(model_name)
    banks = Banks.of(model, data, torch.device("cpu"))
    indices = query_subset(data, queries, query_seed)
    images, labels = query_images(data, indices)
    scorer = create_attack("cascade", model, reference=banks.reference, database=banks.database, topk=1000)
    seconds: dict[str, list[float]] = {v: [] for v in todo}
    ap: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for variant in todo:
            options = VARIANTS[variant]
            name, extra = ("pga", {}) if options is None else ("cascade", {"stages": WHITE_BOX, **options})
            attack = create_attack(name, model, reference=banks.reference, database=banks.database, **extra)
            began = time.perf_counter()
            adv = attack(images, labels, indices=indices)
            seconds[variant].append(time.perf_counter() - began)
            ap[variant] = scorer.average_precision(adv, labels).numpy()
    for variant in todo:
        row = {
            "model": model_name,
            "variant": variant,
            "queries": queries,
            "query_seed": query_seed,
            "options": VARIANTS[variant],
            "map": float(ap[variant].mean()),
            "ap": ap[variant].tolist(),
            "seconds": min(seconds[variant]),
            "rounds": rounds,
        }
        rows.add(row)
        print(f"{model_name:30s} {variant:11s} mAP {row['map']:.4f}  {row['seconds']:.1f} s", flush=True)


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Best-iterate keeping and plateau stops in the cascade's white-box stages",
        "",
        f"`{COMMAND}` (rows: `benchmarks/results/cascade_stops.json`). Zoo models, 100 seeded queries, eps 8/255, "
        "mAP@1000, the recipe's four white-box stages (no gradient-free stage). Cost: seconds over one PgA "
        "run's (T = 100) on the same queries, interleaved, fastest of the rounds, one thread.",
        "",
        "| model | query seed | " + " | ".join(v for v in VARIANTS if v != "pga") + " |",
        "|---|---|" + "---|" * (len(VARIANTS) - 1),
    ]
    keys = sorted(
        {(r["model"], r["queries"], r["query_seed"]) for r in rows}, key=lambda k: (MODELS.index(k[0]), k[2])
    )
    for model, queries, seed in keys:
        mine = {
            r["variant"]: r
            for r in rows
            if (r["model"], r["queries"], r["query_seed"]) == (model, queries, seed)
        }
        if not all(v in mine for v in VARIANTS):
            continue
        unit = mine["pga"]["seconds"]
        cells = [f"{mine[v]['map']:.4f} ({mine[v]['seconds'] / unit:.1f}x)" for v in VARIANTS if v != "pga"]
        lines.append(f"| {model} | {seed} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cell: mAP after the four stages (lower is stronger) and cost in PgA runs.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS), help="zoo models, comma-separated")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--query-seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "cascade_stops.json"))
    parser.add_argument("--markdown", default=None, help="write the table to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = Rows(Path(args.out), COMMAND, KEY)
    for model_name in args.models.split(","):
        if model_name not in MODELS:
            raise SystemExit(f"unknown model {model_name!r}; valid: {', '.join(MODELS)}")
        measure(rows, model_name, args.queries, args.query_seed, args.rounds)
    rows.publish(markdown(rows.rows), args.markdown)
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
