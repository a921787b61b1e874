"""Cost of batch-invariant model calls: the zoo model's forward + backward on a whole batch against fixed blocks.

    python benchmarks/bench_blocks.py            # ~1 min; rows to benchmarks/results/blocks.json

Every attack calls the model on blocks of ``block_rows`` images (:class:`robusthash.models.fixed_rows.FixedRows`),
so that a query's floats do not depend on its batch. This times one forward and backward pass of
``fashion-mnist-dph-32`` over a batch of 128 images, whole and in blocks of 8 to 128 rows, under 1 and 2 threads,
interleaved (each setting timed in turn, best of the rounds), in milliseconds per image.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import RESULTS, Rows

from robusthash.app.zoo import load_model
from robusthash.models.fixed_rows import FixedRows

COMMAND = "python benchmarks/bench_blocks.py"


def per_image_ms(model, x: torch.Tensor, repeats: int = 5) -> float:
    began = time.perf_counter()
    for _ in range(repeats):
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(model.preactivation(xa).sum(), xa)
    return (time.perf_counter() - began) / repeats / len(x) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = load_model("fashion-mnist-dph-32").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    settings = [(threads, rows) for threads in (1, 2) for rows in (None, 8, 16, 32, 64, 128)]
    best = {s: float("inf") for s in settings}
    for _ in range(args.rounds):
        for threads, rows in settings:
            torch.set_num_threads(threads)
            best[(threads, rows)] = min(
                best[(threads, rows)], per_image_ms(model if rows is None else FixedRows(model, rows), x)
            )
    table = Rows(RESULTS / "blocks.json", COMMAND, ("threads", "block_rows"))
    print(f"{COMMAND}\n\n| threads | calls | ms / image (fwd + bwd) | vs whole batch |\n|---:|---|---:|---:|")
    for threads, rows in settings:
        ms = best[(threads, rows)]
        table.add(
            {
                "threads": threads,
                "block_rows": rows,
                "ms_per_image": ms,
                "batch": len(x),
                "model": "fashion-mnist-dph-32",
            }
        )
        label = "whole batch of 128" if rows is None else f"blocks of {rows}"
        print(f"| {threads} | {label} | {ms:.3f} | {ms / best[(threads, None)]:.2f}x |")


if __name__ == "__main__":
    main()
