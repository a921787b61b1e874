"""Another CPU's float rounding, simulated: how far can the zoo's clean numbers move on a machine whose kernels
sum in another order?

    python benchmarks/bench_rounding.py        # ~2 min; rows to benchmarks/results/rounding.json

Adds N(0, (rel * mean |logit|)^2) to every query and database logit of three zoo models (rel 1e-5 and a
pessimistic 1e-4, about 1,000 ulps of a typical logit) and reports the bits that flip, the change of the clean
mAP@1000 over the 1,000 queries and the largest and mean change of a query's AP. tests/test_zoo.py takes its
tolerances for a machine whose logits' fingerprint differs from these figures.
"""

from __future__ import annotations

import numpy as np
import torch
from common import RESULTS, Rows

from robusthash import metrics
from robusthash.app.zoo import checkpoint
from robusthash.codes import binarize
from robusthash.data import iterate_batches, labels_of

COMMAND = "python benchmarks/bench_rounding.py"
MODELS = ("fashion-mnist-dph-32", "fashion-mnist-dpsh-32-cgat", "fashion-mosaic-dpsh-32-cgat")


@torch.no_grad()
def logits(model: torch.nn.Module, split) -> torch.Tensor:
    return torch.cat([model.preactivation(x) for x, _, _ in iterate_batches(split, 500)])


def main() -> None:
    rows = Rows(RESULTS / "rounding.json", COMMAND, ("model", "rel", "seed"))
    for name in MODELS:
        ckpt = checkpoint(name)
        model, data = ckpt.build_model().eval(), ckpt.record.data_ref.load()

        hq, hd = logits(model, data.query), logits(model, data.database)
        ql, dl = labels_of(data.query), labels_of(data.database)
        base = np.asarray(metrics.average_precision(binarize(hq), binarize(hd), ql, dl, 1000))
        scale = float(hd.abs().mean())
        for rel in (1e-5, 1e-4):
            for seed in range(2):
                g = torch.Generator().manual_seed(seed)
                nq = hq + scale * rel * torch.randn(hq.shape, generator=g)
                nd = hd + scale * rel * torch.randn(hd.shape, generator=g)
                flips = int((binarize(nq) != binarize(hq)).sum() + (binarize(nd) != binarize(hd)).sum())
                ap = np.asarray(metrics.average_precision(binarize(nq), binarize(nd), ql, dl, 1000))
                change = np.abs(ap - base)
                row = {
                    "model": name,
                    "rel": rel,
                    "seed": seed,
                    "flips": flips,
                    "map_change": float(abs(ap.mean() - base.mean())),
                    "max_ap_change": float(change.max()),
                    "mean_ap_change": float(change.mean()),
                }
                rows.add(row)
                print(
                    f"{name:28s} rel {rel:g} seed {seed}: {flips} bits flip, mAP moves {row['map_change']:.1e}, "
                    f"a query's AP up to {row['max_ap_change']:.1e} (mean {row['mean_ap_change']:.1e})",
                    flush=True,
                )
    print(f"rows in {RESULTS / 'rounding.json'}; command: {COMMAND}")


if __name__ == "__main__":
    main()
