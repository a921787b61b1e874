"""Rebuild the model zoo (src/robusthash/app/zoo) from a finished run of the demo trained from scratch.

    robusthash demo --from-scratch --out runs/zoo-build && python scripts/build_zoo.py runs/zoo-build

Each checkpoint is copied without its optimiser, scheduler, generator and method state (inference only),
re-measured (clean mAP@1000 on the embedded split, recorded in the manifest with the file's SHA-256) and
written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robusthash import metrics
from robusthash.app.zoo import MANIFEST, ZOO_DIR, sha256_of
from robusthash.checkpoint import read_checkpoint
from robusthash.data import labels_of
from robusthash.evaluation import encode
from robusthash.records import ModelRecord
from robusthash.runtime import atomic_torch_save, atomic_write_json, safe_load

KEEP = ("format", "meta", "model", "epoch")
MODELS = {"": "undefended", "-atrdh": "ATRDH", "-pga-at": "PgA-AT", "-cgat": "CgAT"}


def clean_map(path: Path, topk: int) -> float:
    ckpt = read_checkpoint(path)
    data = ckpt.record.data_ref.load()
    model = ckpt.build_model("cpu")
    q, db = encode(model, data.query), encode(model, data.database)
    return float(metrics.mean_average_precision(q, db, labels_of(data.query), labels_of(data.database), topk))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="folder of a finished `robusthash demo --from-scratch` run")
    parser.add_argument("--topk", type=int, default=1000)
    args = parser.parse_args()
    run = Path(args.run)
    entries = []
    for suffix, label in MODELS.items():
        source = run / f"model{suffix}.pt"
        if not source.is_file():
            print(
                f"{source} not found: run `robusthash demo --from-scratch --out {run}` first", file=sys.stderr
            )
            return 2
        payload = safe_load(source, "checkpoint")
        record = ModelRecord.from_meta(payload.get("meta"), str(source))
        data = record.data_ref.name
        name = f"{data}-{record.loss}-{record.bits}{suffix}"
        target = ZOO_DIR / f"{name}.pt"
        atomic_torch_save({k: payload[k] for k in KEEP}, target)
        mean_ap = clean_map(target, args.topk)
        recipe = f"{record.loss.upper()} / {record.backbone} / {record.bits} bits"
        entries.append(
            {
                "name": name,
                "file": target.name,
                "sha256": sha256_of(target),
                "clean_map": mean_ap,
                "topk": args.topk,
                "description": f"{label} {recipe} on the embedded {data} split (robusthash demo)",
            }
        )
        print(f"{name}: clean mAP@{args.topk} {mean_ap:.4f}, {target.stat().st_size / 1e3:.0f} kB")
    atomic_write_json({"models": entries}, MANIFEST)
    print(f"manifest: {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
