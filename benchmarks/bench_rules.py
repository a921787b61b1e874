"""robusthash's rules against the authors' public code where the papers are silent (issue 25), measured.

    python benchmarks/bench_rules.py --markdown docs/rules.md     # ~5 min per row on one CPU core; resumable

Fashion-MNIST, the embedded recipe (small_cnn, 20 epochs), 32 bits (``--bits``), seeds 0-2; each loss trained under each
rule: clean mAP@1000 and PgA's mAP@1000 (100 seeded queries, T = 100, eps 8/255); for the bank losses also the
robust mAP (the robust protocol, same queries) of CgAT (3 epochs, lambda 1) on top of each trained model, since
CgAT trains through the same loss.

- ``bank`` (DPH, DPSH): ``live_batch=True`` (the batch's own bank rows differentiable) against
  ``live_batch=False`` (DeepHash-pytorch's ``U[ind] = u.data``).
- ``dsdh``: ``update="epoch", quant=0.1, live_batch=True`` (robusthash's rule until these rows, DSDH-C's still: B
  and W once per epoch from sign(U), the network pulled to B) against ``update="batch", quant=0,
  live_batch=False`` (DeepHash-pytorch / TreezzZ: per batch, B carried over, the network never sees B; the
  default since these rows).

Which rule became each default follows from these rows (docs/choices.md). Rows go to benchmarks/results/rules.json.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

from common import CACHE, RESULTS, Rows, dataset

from robusthash.checkpoint import read_checkpoint
from robusthash.defenses import DefenseConfig, defend
from robusthash.records import DatasetRef
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.training import TrainConfig, train

COMMAND = "python benchmarks/bench_rules.py"
KEY = ("loss", "bits", "seed", "rule")
RULES: dict[str, dict[str, dict[str, Any]]] = {
    "dph": {"live batch rows": {"live_batch": True}, "constant bank (authors')": {"live_batch": False}},
    "dpsh": {"live batch rows": {"live_batch": True}, "constant bank (authors')": {"live_batch": False}},
    "dsdh": {
        "per epoch, quant 0.1": {"update": "epoch", "quant": 0.1, "live_batch": True},
        "per batch, no coupling (authors')": {"update": "batch", "quant": 0.0, "live_batch": False},
    },
}
DEFENDED = ("dph", "dpsh")  # CgAT trains through these losses


def measure(rows: Rows, loss: str, bits: int, seed: int, rule: str, queries: int) -> dict:
    key = {"loss": loss, "bits": bits, "seed": seed, "rule": rule}
    row = rows.get(**key)
    data = dataset("fashion-mnist")
    slug = rule.split(" (")[0].replace(" ", "-").replace(",", "")
    path = CACHE / f"fashion-mnist-{loss}-{bits}-s{seed}-{slug}.pt"
    if row is None:
        options = RULES[loss][rule]
        config = TrainConfig(loss=loss, bits=bits, seed=seed, epochs=20, loss_options=options)
        result = train(data, config, path, dataset_options=DatasetRef("fashion-mnist").options(), quiet=True)
        suite = AttackSuite(attacks=["pga"], queries=queries, seed=0)
        run = evaluate_attacks(read_checkpoint(path).build_model(), data, suite, quiet=True)
        row = {
            **key,
            "options": options,
            "clean_map": run.clean.map,
            "pga_map": run.attack("pga").map,
            "train_seconds": result.seconds,
        }
        rows.add(row)
    if loss in DEFENDED and "cgat_robust_map" not in row:
        defended = path.with_name(f"{path.stem}-cgat.pt")
        defend(read_checkpoint(path), data, DefenseConfig(method="cgat"), defended, quiet=True)
        suite = AttackSuite(protocol="robust", queries=queries, seed=0)
        run = evaluate_attacks(read_checkpoint(defended).build_model(), data, suite, quiet=True)
        row = {**row, "cgat_clean_map": run.clean.map, "cgat_robust_map": run.robust_map}
        rows.add(row)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "# robusthash's rules against the authors' code",
        "",
        f"Produced by `{COMMAND} --markdown docs/rules.md` (rows: `benchmarks/results/rules.json`). "
        "Fashion-MNIST, small_cnn, 20 epochs; mAP@1000 on 100 seeded queries; PgA T = 100, eps 8/255; "
        "CgAT: 3 epochs, lambda 1, then the robust protocol on the same queries (an upper bound).",
        "",
        "| loss | bits | rule | seed | clean mAP | PgA mAP | train s | CgAT clean | CgAT robust |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = {
        cell: i for i, cell in enumerate((loss, rule) for loss, rules in RULES.items() for rule in rules)
    }
    for r in sorted(rows, key=lambda r: (r["bits"], order.get((r["loss"], r["rule"]), 99), r["seed"])):
        cgat = (
            f"{r['cgat_clean_map']:.4f} | {r['cgat_robust_map']:.4f}" if "cgat_robust_map" in r else "- | -"
        )
        lines.append(
            f"| {r['loss']} | {r['bits']} | {r['rule']} | {r['seed']} | {r['clean_map']:.4f} | {r['pga_map']:.4f} "
            f"| {r['train_seconds']:.0f} | {cgat} |"
        )
    lines += [
        "",
        "Means over seeds:",
        "",
        "| loss | bits | rule | clean mAP | PgA mAP | CgAT robust |",
        "|---|---:|---|---:|---:|---:|",
    ]
    cells = sorted(
        {(r["bits"], r["loss"], r["rule"]) for r in rows}, key=lambda c: (c[0], order.get(c[1:], 99))
    )
    for bits, loss, rule in cells:
        mine = [r for r in rows if (r["bits"], r["loss"], r["rule"]) == (bits, loss, rule)]
        if not mine:
            continue

        def mean(field: str, mine: list[dict] = mine) -> str:
            values = [r[field] for r in mine if field in r]
            return f"{sum(values) / len(values):.4f} ({len(values)})" if values else "-"

        lines.append(
            f"| {loss} | {bits} | {rule} | {mean('clean_map')} | {mean('pga_map')} | {mean('cgat_robust_map')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--losses", default=",".join(RULES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--bits", default="32", help="code lengths, comma-separated (the tables: 32)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "rules.json"))
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for loss in args.losses.split(","):
        if loss not in RULES:
            raise SystemExit(f"unknown loss {loss!r}; valid: {', '.join(RULES)}")
        for bits, seed in itertools.product(
            [int(b) for b in args.bits.split(",")], [int(s) for s in args.seeds.split(",")]
        ):
            for rule in RULES[loss]:
                r = measure(rows, loss, bits, seed, rule, args.queries)
                cgat = f", CgAT robust {r['cgat_robust_map']:.4f}" if "cgat_robust_map" in r else ""
                print(
                    f"{loss} {bits} bits seed {seed} {rule}: clean {r['clean_map']:.4f}, PgA {r['pga_map']:.4f}{cgat}",
                    flush=True,
                )
    rows.publish(markdown(rows.rows), args.markdown)
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
