"""Query attacks against the embedded zoo models: mAP against query budget, side by side with PgA.

    python benchmarks/bench_blackbox.py --markdown docs/blackbox.md     # resumable; ~20 min on 2 CPU cores

For each zoo model (undefended DPH-32 and its ATRDH, PgA-AT and CgAT versions, Fashion-MNIST): white-box PgA
(100 steps), the robust cascade with and without its gradient-free stage, and the attacks that only see what a
retrieval service returns, on the same seeded 100 queries,
eps 8/255, mAP@1000: Square with code access (continuous codes; and binary codes only; and its L2 variant in
the L2 ball of radius 1.0, which holds the 8/255 L-inf ball's largest L2 norm of 0.88 on 28 x 28 images), and QAIR
with rank-only access (the top-100 list). Each query attack records the mAP it had reached at each budget of 100 / 1,000 /
10,000 images per query up to ``--budget`` and the images it sent (mean, median, max). ``--budget 10000
--queries 20`` adds the long-budget rows. Rows go to benchmarks/results/blackbox.json.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import RESULTS, Rows, dataset

from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.zoo import load_model

COMMAND = "python benchmarks/bench_blackbox.py"
KEY = ("model", "attack", "budget", "queries")
MODELS = ["fashion-mnist-dph-32", "fashion-mnist-dph-32-atrdh", "fashion-mnist-dph-32-pga-at",
          "fashion-mnist-dph-32-cgat"]  # fmt: skip
# label -> (registered attack, options, access)
VARIANTS = {
    "pga": ("pga", {}, "white-box"),
    "square": ("square", {"continuous": True}, "code (continuous)"),
    "square-binary": ("square", {"continuous": False}, "code (binary)"),
    "qair": ("qair", {"oracle_topk": 100}, "rank (top 100)"),
    "square-l2": ("square", {"norm": "l2", "l2_eps": 1.0}, "code (continuous), L2 ball 1.0"),
    # the robust protocol's cascade before and after its gradient-free stage
    "cascade-white-box": ("cascade", {"stages": ["dagger", "target", "pga", "target-2"]}, "white-box"),
    "cascade": ("cascade", {}, "white-box + code oracle"),
}


def measure(rows: Rows, model_name: str, label: str, budget: int, queries: int) -> None:
    name, options, access = VARIANTS[label]
    queried = name in ("square", "qair")
    key = {"model": model_name, "attack": label, "budget": budget if queried else None, "queries": queries}
    if rows.has(**key):
        return
    if queried:
        options = {**options, "budget": budget}
    suite = AttackSuite(attacks=[name], queries=queries, attack_options={name: options}, gallery_queries=0)
    began = time.perf_counter()
    run = evaluate_attacks(load_model(model_name), dataset("fashion-mnist"), suite, quiet=True)
    outcome = run.attacks[0]
    rows.add({**key, "access": access, "clean": run.clean.map, "map": outcome.map,
              "budget_map": outcome.budget_map, "query_counts": outcome.query_counts(),
              "seconds_per_image": outcome.seconds_per_image, "wall_seconds": time.perf_counter() - began,
              "threads": torch.get_num_threads(), "settings": outcome.settings, "ap": outcome.scores.ap,
              "flags": [f.line() for f in run.flags if f.fired]})  # fmt: skip
    print(f"{model_name} {label} budget {budget}: mAP {outcome.map:.4f} ({outcome.budget_map})", flush=True)


def markdown(rows: Rows) -> str:
    out = [f"Query attacks on the zoo models (Fashion-MNIST, DPH / small_cnn / 32 bits), eps 8/255, mAP@1000. "
           f"`{COMMAND} --markdown docs/blackbox.md`\n"]  # fmt: skip
    budgets = sorted({int(b) for r in rows.rows for b in (r.get("budget_map") or {})})
    for queries in sorted({r["queries"] for r in rows.rows}):
        subset = [r for r in rows.rows if r["queries"] == queries]
        out.append(f"\n### {queries} queries\n")
        header = ["model", "attack", "access", "clean"] + [f"at {b:,}" for b in budgets] + [
            "final mAP", "images sent: mean / median / max", "s / image", "threads"]
        out.append("| " + " | ".join(header) + " |\n|" + "---|" * 3 + "---:|" * (len(header) - 3))
        for r in sorted(subset, key=lambda r: (MODELS.index(r["model"]) if r["model"] in MODELS else 9,
                                               list(VARIANTS).index(r["attack"]), r["budget"] or 0)):  # fmt: skip
            curve = r.get("budget_map") or {}
            counts = r.get("query_counts")
            sent = f"{counts['mean']:.0f} / {counts['median']:.0f} / {counts['max']:.0f}" if counts else ""
            cells = [r["model"].removeprefix("fashion-mnist-"), r["attack"], r["access"], f"{r['clean']:.4f}"]
            cells += [f"{curve[str(b)]:.4f}" if str(b) in curve else "" for b in budgets]
            cells += [f"{r['map']:.4f}", sent, f"{r['seconds_per_image']:.3f}", str(r.get("threads", ""))]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--attacks", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    args = parser.parse_args()
    rows = Rows(RESULTS / "blackbox.json", COMMAND, KEY)
    for model_name in [m for m in args.models.split(",") if m]:
        for label in [a for a in args.attacks.split(",") if a]:
            measure(rows, model_name, label, args.budget, args.queries)
    text = markdown(rows)
    rows.set_markdown(text)
    print(text)
    if args.markdown:
        from pathlib import Path

        Path(args.markdown).write_text("# Query attacks\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
