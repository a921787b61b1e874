"""Fast adversarial training (issue 30): what each way of cheapening the inner attack costs and keeps.

    python benchmarks/bench_fast_at.py --markdown docs/fast-at.md        # ~1.5 h on one CPU core; resumable
    python benchmarks/bench_fast_at.py --timing-only                     # the interleaved timing, ~5 min

DPSH, Fashion-MNIST, 32 bits (the defence tables' base model); each defence (CgAT, PgA-AT, SAAT, ATRDH) trained
with each schedule of its training attack:

- ``pgd-7``: the papers' (7 steps of 2/255 in 8/255, random start; 3 epochs), robusthash's default;
- ``pgd-3``: 3 steps of 4/255 from a random start, fewer steps with a larger step;
- ``fgsm-rs``: one step of 10/255 (1.25 eps) from a uniform random start (Wong, Rice and Kolter, "Fast is better
  than free", ICLR 2020);
- ``free-3``: free adversarial training (Shafahi et al., NeurIPS 2019): each batch replayed 3 times, the
  perturbation moved by eps along the sign of the training step's own input gradient, 1 epoch (the 3 epochs
  divided by the replays, as the paper divides them); not ATRDH (its loss is not its attack's);
- ``fgsm-ep``: one step of 8/255 (eps) from the item's perturbation of the previous epoch (random the first time):
  the epoch prior of Jia et al., "Prior-guided adversarial initialization for fast adversarial training"
  (ECCV 2022), without their regulariser;
- ``fgsm-ep-10``: ``fgsm-ep`` with FGSM-RS's step of 10/255 (1.25 eps);
- ``atta-1``: one step of 2/255 from the same carried start: ATTA-1 (Zheng et al., "Efficient adversarial
  training with transferable adversarial examples", CVPR 2020; the authors' step 0.007).

Timing: the first 12 batches of an epoch per schedule and of clean training, interleaved round-robin in one
process (3 rounds, median), as seconds per optimiser step; the cost of the whole defence against 3 clean epochs.
Quality: clean mAP@1000 and the robust protocol's mAP@1000 (an upper bound) on the same seeded queries.
Rows go to benchmarks/results/fast_at.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import CACHE, RESULTS, Rows, dataset, trained_model

from robusthash.checkpoint import read_checkpoint
from robusthash.defenses import DefenseConfig, defend, defense_class
from robusthash.losses import create_loss
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.training import CleanTraining, TrainConfig

COMMAND = "python benchmarks/bench_fast_at.py"
KEY = ("kind", "defense", "schedule", "seed")
SCHEDULES: dict[str, dict[str, Any]] = {
    "pgd-7": {},
    "pgd-3": {"steps": 3, "step_size": 4 / 255},
    "fgsm-rs": {"steps": 1, "step_size": 10 / 255},
    "free-3": {"replays": 3, "epochs": 1},
    "fgsm-ep": {"steps": 1, "step_size": 8 / 255, "carry": True},
    "atta-1": {"steps": 1, "step_size": 2 / 255, "carry": True},
    "fgsm-ep-10": {"steps": 1, "step_size": 10 / 255, "carry": True},
}
DEFENCES = ("cgat", "pga-at", "saat", "atrdh")
DEFAULT_EPOCHS = 3


def schedules(defence: str) -> list[str]:
    return [s for s in SCHEDULES if "replays" not in SCHEDULES[s] or defense_class(defence).free]


def step_seconds(base: Path, defence: str | None, schedule: str, batches: int) -> float:
    """Seconds per optimiser step over the first ``batches`` batches of one schedule (one measurement)."""
    data = dataset("fashion-mnist")
    ckpt = read_checkpoint(base)
    model = ckpt.build_model().train()
    record = ckpt.record
    loss_fn = create_loss(record.loss, model.bits, data.num_classes, len(data.train), **record.loss_options)
    generator = torch.Generator().manual_seed(0)
    device = torch.device("cpu")
    if defence is None:
        config = TrainConfig(**{**record.train, "epochs": 20})
        method = CleanTraining(model, loss_fn, data, device, generator, config=config)
        replays = 1
    else:
        cfg = DefenseConfig(method=defence, **SCHEDULES[schedule])
        method = defense_class(defence)(model, loss_fn, data, device, generator, config=cfg)
        replays = cfg.replays
    optimizer = method.make_optimizer()
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))
    steps = 0
    began = time.perf_counter()
    for b in range(batches):
        x, y, idx = data.train.batch(order[b * 32 : (b + 1) * 32])
        for _ in range(replays):
            terms = method.batch_loss(x, y, idx, steps)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            method.after_backward()
            optimizer.step()
            steps += 1
    return (time.perf_counter() - began) / steps


def timing(rows: Rows, base: Path, rounds: int, batches: int, wanted: set[str]) -> None:
    """Interleaved timing of the ``wanted`` schedules not timed yet, with clean training in the same rounds
    (each row keeps the clean step it is compared with; the clean row itself is written once)."""
    todo = [
        (d, s)
        for d in DEFENCES
        for s in schedules(d)
        if s in wanted and not rows.has(kind="timing", defense=d, schedule=s, seed=0)
    ]
    if not todo:
        return
    cells = [(None, "clean"), *todo]
    times: dict[tuple, list[float]] = {c: [] for c in cells}
    for r in range(rounds):
        for cell in cells:
            times[cell].append(step_seconds(base, cell[0], cell[1], batches))
            print(
                f"round {r + 1}: {cell[0] or 'clean'} {cell[1]}: {times[cell][-1]:.3f} s per step", flush=True
            )
    clean = statistics.median(times[(None, "clean")])
    batches_per_epoch = -(-len(dataset("fashion-mnist").train) // 32)
    for (d, s), t in times.items():
        if d is None and rows.has(kind="timing", defense="none", schedule="clean", seed=0):
            continue
        per_step = statistics.median(t)
        total_steps = SCHEDULES.get(s, {}).get("epochs", DEFAULT_EPOCHS) * SCHEDULES.get(s, {}).get(
            "replays", 1
        )
        rows.add(
            {
                "kind": "timing",
                "defense": d or "none",
                "schedule": s,
                "seed": 0,
                "seconds_per_step": per_step,
                # one pass over the training set: every batch, replays counted
                "seconds_per_epoch": per_step * batches_per_epoch * SCHEDULES.get(s, {}).get("replays", 1),
                "rounds": t,
                "batches": batches,
                "x_clean_step": per_step / clean,
                # the whole defence against DEFAULT_EPOCHS clean epochs (the same passes over the data)
                "x_clean_epochs": per_step * total_steps / (clean * DEFAULT_EPOCHS) if d else 1.0,
                "threads": torch.get_num_threads(),
                "clean_seconds_per_step": clean,
            }
        )


def quality(rows: Rows, base: Path, defence: str, schedule: str, queries: int) -> None:
    if rows.has(kind="quality", defense=defence, schedule=schedule, seed=0):
        return
    data = dataset("fashion-mnist")
    cfg = DefenseConfig(method=defence, **SCHEDULES[schedule])
    out = CACHE / f"{base.stem}-{defence}-{schedule}.pt"
    result = defend(read_checkpoint(base), data, cfg, out, quiet=True)
    suite = AttackSuite(protocol="robust", queries=queries, seed=0)
    run = evaluate_attacks(read_checkpoint(out).build_model(), data, suite, quiet=True)
    rows.add(
        {
            "kind": "quality",
            "defense": defence,
            "schedule": schedule,
            "seed": 0,
            "options": SCHEDULES[schedule],
            "queries": queries,
            "clean_map": run.clean.map,
            "robust_map": run.robust_map,
            "wall_seconds": result.seconds,  # on a shared machine: the cost is the interleaved timing rows
            "epochs": cfg.epochs,
        }
    )
    print(f"{defence} {schedule}: clean {run.clean.map:.4f} robust {run.robust_map:.4f}", flush=True)


def markdown(rows: list[dict]) -> str:
    def get(kind: str, d: str, s: str) -> dict | None:
        return next((r for r in rows if (r["kind"], r["defense"], r["schedule"]) == (kind, d, s)), None)

    clean = get("timing", "none", "clean")
    lines = [
        "# Fast adversarial training",
        "",
        f"Produced by `{COMMAND} --markdown docs/fast-at.md` (rows: `benchmarks/results/fast_at.json`). DPSH, "
        "Fashion-MNIST, 32 bits; cost: seconds per optimiser step over the first 12 batches, schedules and clean "
        "training interleaved in one process (median of 3 rounds), and the whole defence against 3 clean epochs; "
        "quality: clean mAP@1000 and the robust protocol's mAP@1000 (an upper bound) on the same seeded queries, "
        "each defended model trained once (seed 0).",
        "",
    ]
    if clean:
        lines += [
            f"Clean training: {clean['seconds_per_step']:.3f} s per step, {clean['seconds_per_epoch']:.0f} s per "
            f"epoch ({clean['threads']} threads). Not measured yet: '-'.",
            "",
        ]
    later = sorted(
        {
            (r["clean_seconds_per_step"], r["schedule"])
            for r in rows
            if r["kind"] == "timing"
            and clean
            and r.get("clean_seconds_per_step", clean["seconds_per_step"]) != clean["seconds_per_step"]
        }
    )
    if later:
        steps = sorted({c for c, _ in later})
        schedules_later = ", ".join(dict.fromkeys(s for _, s in later))
        lines += [
            f"Timed in a later run, against that run's own clean step ({', '.join(f'{c:.3f}' for c in steps)} s): "
            f"{schedules_later}. Compare their x-clean column with the other rows, not their seconds.",
            "",
        ]
    lines += [
        "| defence | schedule | s / step | s / epoch | x clean (whole defence) | clean mAP | robust mAP | "
        "robust - pgd-7 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in DEFENCES:
        ref = get("quality", d, "pgd-7")
        for s in schedules(d):
            t, q = get("timing", d, s), get("quality", d, s)
            cost = (
                f"{t['seconds_per_step']:.3f} | {t['seconds_per_epoch']:.0f} | {t['x_clean_epochs']:.2f}"
                if t
                else "- | - | -"
            )
            if q:
                delta = f"{q['robust_map'] - ref['robust_map']:+.4f}" if ref else "-"
                qual = f"{q['clean_map']:.4f} | {q['robust_map']:.4f} | {delta}"
            else:
                qual = "- | - | -"
            lines.append(f"| {d} | {s} | {cost} | {qual} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--defences", default=",".join(DEFENCES))
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--schedules", default=",".join(SCHEDULES), help="schedules to run (comma-separated)")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "fast_at.json"))
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    base = trained_model("fashion-mnist", 32, loss="dpsh")
    wanted = set(args.schedules.split(","))
    unknown = wanted - set(SCHEDULES)
    if unknown:
        parser.error(f"unknown schedule(s) {', '.join(sorted(unknown))}; valid: {', '.join(SCHEDULES)}")
    if not args.quality_only:
        timing(rows, base, args.rounds, args.batches, wanted)
    if not args.timing_only:
        for d in args.defences.split(","):
            for s in schedules(d):
                if s in wanted:
                    quality(rows, base, d, s, args.queries)
    rows.publish(markdown(rows.rows), args.markdown)
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
