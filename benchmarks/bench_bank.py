"""Bank losses with live batch rows (robusthash) against a constant bank (DeepHash-pytorch, ``live_batch=False``).

    python benchmarks/bench_bank.py --markdown docs/bank.md     # ~20 min per loss on one CPU core; resumable

DPH and DPSH at 32 bits on Fashion-MNIST, the embedded recipe, seeds 0-2, each trained both ways: clean mAP@1000
and PgA's mAP@1000 (100 seeded queries, T = 100). Which rule becomes the default follows from these rows
(issue 25, item 1). Rows go to benchmarks/results/bank.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import CACHE, RESULTS, Rows, dataset

from robusthash.checkpoint import read_checkpoint
from robusthash.records import DatasetRef
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.training import TrainConfig, train

COMMAND = "python benchmarks/bench_bank.py"
KEY = ("loss", "bits", "seed", "live_batch")


def measure(rows: Rows, loss: str, bits: int, seed: int, live: bool, queries: int) -> dict:
    key = {"loss": loss, "bits": bits, "seed": seed, "live_batch": live}
    row = rows.get(**key)
    if row is not None:
        return row
    data = dataset("fashion-mnist")
    path = CACHE / f"fashion-mnist-{loss}-{bits}-s{seed}-{'live' if live else 'constant'}-bank.pt"
    config = TrainConfig(loss=loss, bits=bits, seed=seed, epochs=20, loss_options={"live_batch": live})
    result = train(data, config, path, dataset_options=DatasetRef("fashion-mnist").options(), quiet=True)
    suite = AttackSuite(attacks=["pga"], queries=queries, seed=0)
    run = evaluate_attacks(read_checkpoint(path).build_model(), data, suite, quiet=True)
    row = {
        **key,
        "clean_map": run.clean.map,
        "pga_map": run.attack("pga").map,
        "train_seconds": result.seconds,
    }
    rows.add(row)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Bank losses: live batch rows against a constant bank",
        "",
        f"Produced by `{COMMAND} --markdown docs/bank.md` (rows: `benchmarks/results/bank.json`). Fashion-MNIST, "
        "small_cnn, 20 epochs; mAP@1000 on 100 seeded queries; PgA T = 100, eps 8/255.",
        "",
        "| loss | bits | seed | bank | clean mAP | PgA mAP |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["loss"], r["bits"], r["seed"], not r["live_batch"])):
        bank = "live batch rows" if r["live_batch"] else "constant (authors')"
        lines.append(
            f"| {r['loss']} | {r['bits']} | {r['seed']} | {bank} | {r['clean_map']:.4f} | {r['pga_map']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--losses", default="dph,dpsh")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "bank.json"))
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for loss in args.losses.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for live in (True, False):
                r = measure(rows, loss, 32, seed, live, args.queries)
                print(
                    f"{loss} seed {seed} live_batch={live}: clean {r['clean_map']:.4f}, PgA {r['pga_map']:.4f}",
                    flush=True,
                )
    rows.publish(markdown(rows.rows), args.markdown)
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
