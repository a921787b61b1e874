"""fp32 against bf16 (and channels-last) on the demo's attack stage: mAP under attack and seconds per image.

    python benchmarks/bench_precision.py                  # ~10 min on 2 CPU cores; --device cuda on a GPU

The zoo's undefended demo model (DPH / small_cnn / 32 bits, Fashion-MNIST), the demo's attacks as PGD-20 on all
1,000 queries, eps 8/255. For each attack the variants run back to back, in turn, ``--repeats`` times (the rows
of one attack are measured side by side); mAP comes from the first repeat (every repeat gives the same codes).
Rows go to benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from common import RESULTS, Rows

from robusthash.app.zoo import load_model
from robusthash.data import load_dataset
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.runtime import resolve_device

COMMAND = "python benchmarks/bench_precision.py"
KEY = ("device_name", "model", "attack", "variant")
VARIANTS = {
    "fp32": {"channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": False},
    "fp32+channels_last": {"channels_last": True},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="fashion-mnist-dph-32", help="a zoo model")
    parser.add_argument("--attacks", default="p2p,dhta,hag,sdha,pga")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--queries", type=int, default=None, help="a seeded subset (default: all 1,000)")
    parser.add_argument("--out", default=str(RESULTS / "precision.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    rows = Rows(Path(args.out), COMMAND, KEY, device)
    data = load_dataset("fashion-mnist")
    variants = args.variants.split(",")
    for attack in args.attacks.split(","):
        if all(rows.has(device_name=name, model=args.model, attack=attack, variant=v) for v in variants):
            continue
        runs: dict[str, list] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                suite = AttackSuite(
                    attacks=[attack],
                    protocol="pgd20",
                    queries=args.queries,
                    gallery_queries=0,
                    **VARIANTS[variant],
                )
                model = load_model(args.model, device)  # fresh: channels-last changes the model in place
                runs[variant].append(evaluate_attacks(model, data, suite, device, quiet=True))
        base = runs[variants[0]]
        for variant in variants:
            outcome = runs[variant][0].attacks[0]
            seconds = [r.attacks[0].seconds_per_image for r in runs[variant]]
            ratio = statistics.median(
                b.attacks[0].seconds / r.attacks[0].seconds for b, r in zip(base, runs[variant], strict=True)
            )
            row = {
                "device_name": name,
                "model": args.model,
                "attack": attack,
                "variant": variant,
                "map": outcome.map,
                "clean_map": runs[variant][0].clean.map,
                "map_change_vs_first": outcome.map - base[0].attacks[0].map,
                "seconds_per_image": statistics.median(seconds),
                f"speedup_vs_{variants[0]}": ratio,
                "repeats": args.repeats,
                "queries": outcome.queries,
            }
            rows.add(row)
            print(
                f"{attack:5s} {variant:20s} mAP {outcome.map:.4f} ({row['map_change_vs_first']:+.4f}) "
                f"{1e3 * row['seconds_per_image']:.2f} ms/image, {ratio:.2f}x {variants[0]}'s speed"
            )
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
