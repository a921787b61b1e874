"""PgA's eqs. 12-13 read two ways (issue 11): omega differentiated or constant, x the softsign surrogate or the exact
tanh derivative, against PgA-dagger (eq. 10) and SAAT's attack, on the embedded DPH models.

    python benchmarks/bench_pga_variants.py                           # Fashion-MNIST 16/32/64 bits, ~20 min
    python benchmarks/bench_pga_variants.py --datasets fashion-mosaic --bits 16   # the attack tables' mosaic length

All 1,000 queries, T = 100 steps of 1/255 from a random start, eps 8/255, seed 0, mAP@1000; contiguous weights
(channels-last off, as the committed attack benchmarks). Rows go to benchmarks/results/pga_variants.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, Rows, dataset, trained_model

from robusthash.checkpoint import read_checkpoint
from robusthash.robustness import AttackSuite, evaluate_attacks

COMMAND = "python benchmarks/bench_pga_variants.py"
KEY = ("dataset", "bits", "variant")
VARIANTS = {
    "pga (omega differentiated, surrogate)": ("pga", {}),
    "pga (omega differentiated, exact)": ("pga", {"surrogate_gradient": False}),
    "pga (omega constant, surrogate)": ("pga", {"omega": "constant"}),
    "pga (omega constant, exact)": ("pga", {"omega": "constant", "surrogate_gradient": False}),
    "pga-dagger (surrogate)": ("pga-dagger", {}),
    "saat": ("saat", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="fashion-mnist")
    parser.add_argument("--bits", default="16,32,64")
    parser.add_argument("--out", default=str(RESULTS / "pga_variants.json"))
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for name in args.datasets.split(","):
        data = dataset(name)
        for bits in map(int, args.bits.split(",")):
            ckpt = read_checkpoint(trained_model(name, bits))
            for variant, (attack, options) in VARIANTS.items():
                if rows.has(dataset=name, bits=bits, variant=variant):
                    continue
                suite = AttackSuite(
                    attacks=[attack],
                    steps=100,
                    gallery_queries=0,
                    channels_last=False,
                    attack_options={attack: options},
                )
                run = evaluate_attacks(ckpt.build_model(), data, suite, quiet=True)
                outcome = run.attacks[0]
                rows.add(
                    {
                        "dataset": name,
                        "bits": bits,
                        "variant": variant,
                        "attack": attack,
                        "options": options,
                        "map": outcome.map,
                        "clean_map": run.clean.map,
                        "queries": outcome.queries,
                        "steps": outcome.steps,
                        "seconds_per_image": outcome.seconds_per_image,
                    }
                )
                print(f"{name} {bits:3d} {variant:40s} mAP@1000 {outcome.map:.4f}")
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
