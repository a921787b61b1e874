"""Encoding throughput against batch size: the zoo's undefended 32-bit models over a database split.

    python benchmarks/bench_encode.py          # ~2 min on 2 CPU cores; rows to benchmarks/results/encode.json

:func:`robusthash.evaluation.encode` computes every code of a split (every evaluation encodes 10,000 database
items per model). This times it on the first ``--items`` database images of fashion-mnist (28 px) and
fashion-mosaic (56 px) at several batch sizes, under 1 and 2 threads, interleaved (each setting timed in turn,
best of the rounds), in milliseconds per image, and checks that every batch size gives the same codes.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import RESULTS, Rows

from robusthash.app.zoo import checkpoint
from robusthash.data.base import TensorImageSet
from robusthash.evaluation import encode

COMMAND = "python benchmarks/bench_encode.py"
MODELS = ("fashion-mnist-dpsh-32", "fashion-mosaic-dpsh-32")
BATCHES = (32, 64, 128, 256, 500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    rows = Rows(RESULTS / "encode.json", COMMAND, ("model", "threads", "batch_size"))
    threads_before = torch.get_num_threads()
    for name in MODELS:
        ckpt = checkpoint(name)
        model, data = ckpt.build_model(), ckpt.record.data_ref.load()
        split = TensorImageSet(data.database.images[: args.items], data.database.labels[: args.items])
        best: dict[tuple[int, int], float] = {}
        codes: dict[int, torch.Tensor] = {}
        for _ in range(args.rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for batch in BATCHES:
                    began = time.perf_counter()
                    got = encode(model, split, batch_size=batch)
                    ms = (time.perf_counter() - began) / args.items * 1e3
                    best[threads, batch] = min(ms, best.get((threads, batch), float("inf")))
                    assert torch.equal(codes.setdefault(batch, got), got)
        same = all(torch.equal(codes[b], codes[BATCHES[0]]) for b in BATCHES)
        for (threads, batch), ms in sorted(best.items()):
            rows.add(
                {
                    "model": name,
                    "threads": threads,
                    "batch_size": batch,
                    "ms_per_image": ms,
                    "same_codes": same,
                }
            )
            print(f"{name:24s} {threads} thread(s) batch {batch:4d}: {ms:.3f} ms/image", flush=True)
        print(f"{name}: same codes at every batch size: {same}")
    torch.set_num_threads(threads_before)
    print(f"rows in {RESULTS / 'encode.json'}; command: {COMMAND}")


if __name__ == "__main__":
    main()
