"""Clean retrieval of the embedded recipe for every hashing method: mAP@1000 and training time per loss and
bits on Fashion-MNIST (16/32/64 bits) and fashion-mosaic (32 bits).

    python benchmarks/bench_training.py --markdown docs/training.md   # ~45 min on 2 CPU cores; resumable

It shares the other benchmarks' cached models.

Rows go to benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, Rows, dataset, trained_model

from robusthash.checkpoint import read_checkpoint
from robusthash.evaluation import evaluate_retrieval
from robusthash.losses import list_losses

COMMAND = "python benchmarks/bench_training.py"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--settings", default="fashion-mnist:16,fashion-mnist:32,fashion-mnist:64,fashion-mosaic:32"
    )
    parser.add_argument("--losses", default=",".join(list_losses()))
    parser.add_argument("--out", default=str(RESULTS / "training.json"))
    parser.add_argument("--markdown", default=None, help="write the table to this Markdown file")
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, ("dataset", "bits", "loss"))
    for setting in args.settings.split(","):
        name, bits = setting.split(":")
        for loss in args.losses.split(","):
            if rows.has(dataset=name, bits=int(bits), loss=loss):
                continue
            ckpt = read_checkpoint(trained_model(name, int(bits), loss=loss))
            report = evaluate_retrieval(ckpt.build_model(), dataset(name), topk=1000)
            history = ckpt.record.history
            rows.add(
                {
                    "dataset": name,
                    "bits": int(bits),
                    "loss": loss,
                    "map": report["map"],
                    "p_at_100": report["p_at_n"]["precision"][0],
                    "epochs": len(history),
                    "final_loss": history[-1]["loss"] if history else None,
                    "train_seconds": sum(h.get("seconds", 0.0) for h in history),
                    "train": ckpt.record.train,
                    "train_environment": ckpt.record.environment,
                }
            )
            print(f"{name:15s} {bits:>3s} {loss:8s} mAP@1000 {report['map']:.4f}", flush=True)
    if args.markdown:
        from views import training_markdown

        markdown = training_markdown(rows.rows)
        rows.publish(markdown, args.markdown)  # the doc page, and the rows for robusthash report
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
