"""robusthash's attack rules against the authors' public code where the papers are silent (issue 25), measured.

    python benchmarks/bench_attack_rules.py --markdown docs/attack-rules.md   # ~1 h on one CPU core; resumable

On the benchmarks' DPH model (Fashion-MNIST, small_cnn, 32 bits, seed 0), 100 seeded queries, eps 8/255,
mAP@1000 and t-mAP@1000 (toward each query's target label), measured L-inf and L2 of the perturbation:

- DHTA's anchor items: n_t = 9 distinct items (robusthash) or drawn with replacement (the DHTA code), query
  subsets of seeds 0 and 1 (each seed draws other queries, targets and anchors).
- ProS-GAN at the embedded recipe (4 epochs, 1,500 prototype steps, unbounded as published): robusthash's
  settings (compact layout, rec_weight 12.5 in the official units, the generator's step first) against each
  official one alone (rec_weight 50, the discriminator first, the official layout) and all three together.

Rows go to benchmarks/results/attack_rules.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common import CACHE, PROSGAN_RECIPE, RESULTS, Rows, dataset, trained_model

from robusthash.checkpoint import read_checkpoint
from robusthash.robustness import AttackSuite, evaluate_attacks

COMMAND = "python benchmarks/bench_attack_rules.py"
KEY = ("attack", "rule", "seed")
OFFICIAL_PROSGAN = {"rec_weight": 50.0, "update_order": "discriminator-first", "layout": "official"}
RULES: dict[str, dict[str, dict[str, Any]]] = {
    "dhta": {
        "distinct items": {"anchor_draw": "distinct"},
        "with replacement (authors')": {"anchor_draw": "with-replacement"},
    },
    "prosgan": {
        "robusthash": {},
        "rec_weight 50 (authors')": {"rec_weight": 50.0},
        "discriminator first (authors')": {"update_order": "discriminator-first"},
        "official layout (authors')": {"layout": "official"},
        "all three (authors')": OFFICIAL_PROSGAN,
    },
}
SEEDS = {"dhta": (0, 1), "prosgan": (0,)}


def measure(rows: Rows, attack: str, rule: str, seed: int, queries: int) -> dict:
    key = {"attack": attack, "rule": rule, "seed": seed}
    row = rows.get(**key)
    if row is not None:
        return row
    ckpt = trained_model("fashion-mnist", 32, "dph")
    options = dict(RULES[attack][rule])
    if attack == "prosgan":
        slug = rule.split(" (")[0].replace(" ", "-")
        options = {
            **PROSGAN_RECIPE,
            **options,
            "checkpoint": str(CACHE / f"{ckpt.stem}-prosgan-rule-{slug}.pt"),
        }
    suite = AttackSuite(attacks=[attack], queries=queries, seed=seed, attack_options={attack: options})
    run = evaluate_attacks(read_checkpoint(ckpt).build_model(), dataset("fashion-mnist"), suite, quiet=True)
    outcome = run.attack(attack)
    row = {
        **key,
        "options": RULES[attack][rule],
        "queries": queries,
        "clean_map": run.clean.map,
        "map": outcome.map,
        "tmap": outcome.tmap,
        "linf": outcome.mean_linf,
        "l2": outcome.mean_l2,
        "seconds_per_image": outcome.seconds_per_image,
        "fit_seconds": outcome.fit_seconds,
    }
    rows.add(row)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "# robusthash's attack rules against the authors' code",
        "",
        f"Produced by `{COMMAND} --markdown docs/attack-rules.md` (rows: `benchmarks/results/attack_rules.json`). "
        "DPH, Fashion-MNIST, small_cnn, 32 bits; 100 seeded queries; mAP@1000 and t-mAP@1000 (toward the "
        "query's target label: higher is a stronger targeted attack); measured perturbation (ProS-GAN unbounded, "
        "as published; DHTA in the 8/255 ball).",
        "",
        "| attack | rule | query seed | mAP | t-mAP | L-inf | L2 | fit (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = {(a, r): i for i, (a, rules) in enumerate(RULES.items()) for r in rules}
    for r in sorted(rows, key=lambda r: (order.get((r["attack"], r["rule"]), 99), r["seed"])):
        fit = f"{r['fit_seconds']:.0f}" if r.get("fit_seconds") else "-"
        lines.append(
            f"| {r['attack']} | {r['rule']} | {r['seed']} | {r['map']:.4f} | {r['tmap']:.4f} | "
            f"{r['linf'] * 255:.1f}/255 | {r['l2']:.2f} | {fit} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attacks", default=",".join(RULES))
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "attack_rules.json"))
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for attack in args.attacks.split(","):
        if attack not in RULES:
            raise SystemExit(f"unknown attack {attack!r}; valid: {', '.join(RULES)}")
        for rule in RULES[attack]:
            for seed in SEEDS[attack]:
                r = measure(rows, attack, rule, seed, args.queries)
                print(
                    f"{attack} {rule} (query seed {seed}): mAP {r['map']:.4f}, t-mAP {r['tmap']:.4f}, "
                    f"L-inf {r['linf'] * 255:.1f}/255",
                    flush=True,
                )
    rows.publish(markdown(rows.rows), args.markdown)
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
