"""Query attacks against the embedded zoo models: mAP against query budget, side by side with PgA.

    python benchmarks/bench_blackbox.py --markdown docs/blackbox.md     # resumable; ~20 min on 2 CPU cores

For each zoo model (undefended DPH-32 and its ATRDH, PgA-AT and CgAT versions, Fashion-MNIST): white-box PgA
(100 steps), the robust cascade with and without its gradient-free stage, and the attacks that only see what a
retrieval service returns, on the same seeded 100 queries,
eps 8/255, mAP@1000: Square with code access (continuous codes; and binary codes only; and its L2 variant in
the L2 ball of radius 1.0, which holds the 8/255 L-inf ball's largest L2 norm of 0.88 on 28 x 28 images), and QAIR
with rank-only access (the top-100 list). Each query attack records the mAP it had reached at each budget of
100 / 1,000 / 10,000 images per query up to ``--budget`` and the images it sent (mean, median, max). ``--budget 10000
--queries 20`` adds the long-budget rows; ``--masked`` runs the robust protocol on the undefended model behind an
input quantiser (zero gradient), the same stated for BPDA, and input noise. Rows go to
benchmarks/results/blackbox.json.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import RESULTS, Rows, dataset

from robusthash.app.zoo import load_model
from robusthash.models import wrap_model
from robusthash.robustness import AttackSuite, evaluate_attacks

COMMAND = "python benchmarks/bench_blackbox.py"
KEY = ("model", "attack", "budget", "queries")
MODELS = [
    "fashion-mnist-dph-32",
    "fashion-mnist-dph-32-atrdh",
    "fashion-mnist-dph-32-pga-at",
    "fashion-mnist-dph-32-cgat",
]
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
    rows.add(
        {
            **key,
            "access": access,
            "clean": run.clean.map,
            "map": outcome.map,
            "budget_map": outcome.budget_map,
            "query_counts": outcome.query_counts(),
            "seconds_per_image": outcome.seconds_per_image,
            "wall_seconds": time.perf_counter() - began,
            "threads": torch.get_num_threads(),
            "settings": outcome.settings,
            "ap": outcome.scores.ap,
            "flags": [f.line() for f in run.flags if f.fired],
        }
    )
    print(f"{model_name} {label} budget {budget}: mAP {outcome.map:.4f} ({outcome.budget_map})", flush=True)


class _Logits(torch.nn.Module):
    """A zoo model as a plain module returning its logits, with optional input noise (a stochastic model)."""

    def __init__(self, model: torch.nn.Module, noise: float = 0.0) -> None:
        super().__init__()
        self.model, self.noise = model, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise:
            x = (x + self.noise * torch.randn_like(x)).clamp(0, 1)
        return self.model.preactivation(x)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """8 grey levels (round(7x) / 7): zero gradient almost everywhere."""
    return torch.round(x * 7) / 7


MASKED = {  # name -> the undefended zoo model behind a defence that hides or randomises its gradients
    "plain": lambda m: m,
    "quantised": lambda m: wrap_model(
        _Logits(m), "preactivation", image_shape=(1, 28, 28), preprocess=quantise
    ),
    "quantised+bpda": lambda m: wrap_model(
        _Logits(m), "preactivation", image_shape=(1, 28, 28), preprocess=quantise, bpda=True
    ),
    "noisy": lambda m: wrap_model(_Logits(m, noise=0.1), "preactivation", image_shape=(1, 28, 28)),
}


def measure_masked(rows: Rows, variant: str, queries: int) -> None:
    """The robust protocol (with PgA beside it) on the undefended zoo model behind ``variant``."""
    key = {
        "model": f"fashion-mnist-dph-32+{variant}",
        "attack": "robust-protocol",
        "budget": 1000,
        "queries": queries,
    }
    if rows.has(**key):
        return
    torch.manual_seed(0)  # the noisy model's draws
    model = MASKED[variant](load_model("fashion-mnist-dph-32").eval())
    suite = AttackSuite(protocol="robust", attacks=["pga"], queries=queries, gallery_queries=0)
    began = time.perf_counter()
    run = evaluate_attacks(model, dataset("fashion-mnist"), suite, quiet=True)
    cascade = run.attack("cascade")
    stages = {k: sum(v or 0.0 for v in aps) / len(aps) for k, aps in (cascade.stages or {}).items()}
    per_query = [[v or 0.0 for v in aps] for k, aps in (cascade.stages or {}).items() if k != "square"]
    white_box = sum(min(col) for col in zip(*per_query, strict=True)) / len(per_query[0])
    rows.add(
        {
            **key,
            "access": "white-box + code oracle",
            "clean": run.clean.map,
            "map": run.robust_map,
            "pga": run.attack("pga").map,
            "stages": stages,
            "white_box": white_box,
            "budget_map": None,
            "query_counts": None,
            "seconds_per_image": cascade.seconds_per_image,
            "wall_seconds": time.perf_counter() - began,
            "threads": torch.get_num_threads(),
            "flags": [f.line() for f in run.flags if f.fired],
        }
    )
    print(
        f"{variant}: robust {run.robust_map:.4f}, PgA {run.attack('pga').map:.4f}, stages {stages}",
        flush=True,
    )


def masked_markdown(rows: Rows) -> str:
    found = [r for r in rows.rows if r["attack"] == "robust-protocol"]
    if not found:
        return ""
    out = [
        f"\n### The robust protocol on a model that hides its gradients\n\nThe undefended zoo model behind an input "
        "quantiser (round(7x) / 7: zero gradient), the same with the quantiser stated for BPDA, and with input "
        f"noise 0.1; `{COMMAND} --masked`.\n",
        "| model | queries | clean | PgA | cascade's white-box stages | gradient-free stage | robust | flags "
        "fired |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in found:
        stages = r.get("stages") or {}
        white = r.get("white_box", float("nan"))
        flags = "; ".join(f.split(":")[0].removeprefix("FLAG ") for f in r.get("flags") or []) or "none"
        out.append(
            f"| {r['model'].split('+', 1)[1]} | {r['queries']} | {r['clean']:.4f} | {r['pga']:.4f} | "
            f"{white:.4f} | {stages.get('square', float('nan')):.4f} | {r['map']:.4f} | {flags} |"
        )
    note = (
        "(White-box stages: the mean over queries of the lowest AP of the four gradient stages; gradient-free "
        "stage: the mean of its AP, 0 where a query was already broken and the stage skipped it.)"
    )
    return "\n".join(out) + "\n\n" + note + "\n"


def markdown(rows: Rows) -> str:
    out = [
        f"Query attacks on the zoo models (Fashion-MNIST, DPH / small_cnn / 32 bits), eps 8/255, mAP@1000. "
        f"`{COMMAND} --markdown docs/blackbox.md`\n"
    ]
    budgets = sorted({int(b) for r in rows.rows for b in (r.get("budget_map") or {})})
    plain = [r for r in rows.rows if r["attack"] != "robust-protocol"]
    for queries in sorted({r["queries"] for r in plain}):
        subset = [r for r in plain if r["queries"] == queries]
        out.append(f"\n### {queries} queries\n")
        header = (
            ["model", "attack", "access", "clean"]
            + [f"at {b:,}" for b in budgets]
            + ["final mAP", "images sent: mean / median / max", "s / image", "threads"]
        )
        out.append("| " + " | ".join(header) + " |\n|" + "---|" * 3 + "---:|" * (len(header) - 3))
        for r in sorted(
            subset,
            key=lambda r: (
                MODELS.index(r["model"]) if r["model"] in MODELS else 9,
                list(VARIANTS).index(r["attack"]),
                r["budget"] or 0,
            ),
        ):
            curve = r.get("budget_map") or {}
            counts = r.get("query_counts")
            sent = f"{counts['mean']:.0f} / {counts['median']:.0f} / {counts['max']:.0f}" if counts else ""
            cells = [r["model"].removeprefix("fashion-mnist-"), r["attack"], r["access"], f"{r['clean']:.4f}"]
            cells += [f"{curve[str(b)]:.4f}" if str(b) in curve else "" for b in budgets]
            cells += [f"{r['map']:.4f}", sent, f"{r['seconds_per_image']:.3f}", str(r.get("threads", ""))]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n" + masked_markdown(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--attacks", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--masked",
        action="store_true",
        help="only the robust protocol on the undefended model behind gradient-masking wrappers",
    )
    parser.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    args = parser.parse_args()
    rows = Rows(RESULTS / "blackbox.json", COMMAND, KEY)
    for variant in MASKED if args.masked else []:
        measure_masked(rows, variant, 20)
    for model_name in [m for m in args.models.split(",") if m and not args.masked]:
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
