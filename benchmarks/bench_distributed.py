"""torchrun against one process, on the embedded Fashion-MNIST recipe: what is identical and what is close.

    python benchmarks/bench_distributed.py            # ~15 min on 2 CPU cores (gloo); rows in results/distributed.json
    python benchmarks/bench_distributed.py --device cuda --nproc 1   # one GPU: torchrun + NCCL, world size 1

Three checks, each run as ``robusthash`` commands, once under ``torchrun --nproc-per-node N`` and once as a plain
process, one after the other:

- **attack**: the demo's attack stage (PgA, HAG, SDHA, P2P, DHTA as PGD-20 on 1,000 queries of the zoo's DPH
  model): per-query AP must be identical; wall-clock and summed per-rank crafting seconds are recorded;
- **train**: DPH, 32 bits, the embedded recipe: clean mAP@1000 of the two runs (the global batch is the same;
  batch-norm statistics are per rank and the shuffle differs, so the mAP is close, not equal);
- **defend**: CgAT (3 epochs) of the zoo's DPH model: clean mAP@1000 and mAP under PGD-20 PgA.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, Rows

COMMAND = "python benchmarks/bench_distributed.py"
KEY = ("check", "launcher", "world_size", "device")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def robusthash(args: list[str], nproc: int | None) -> float:
    """Run a robusthash command under torchrun with ``nproc`` processes, or as a plain process (``None``);
    returns the wall seconds."""
    launcher = [sys.executable, "-m", "robusthash"]
    if nproc is not None:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-port",
            str(_port()),
            "-m",
            "robusthash",
        ]
    began = time.perf_counter()
    done = subprocess.run([*launcher, *args], capture_output=True, text=True, env={**os.environ})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(launcher + args)} failed:\n{done.stderr[-4000:]}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun runs (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    parser.add_argument("--checks", default="attack,train,defend")
    parser.add_argument("--out", default=str(RESULTS / "distributed.json"))
    parser.add_argument(
        "--spread-seeds",
        default="",
        help="train: also runs of both launchers with these seeds "
        "(comma-separated): the seed-to-seed spread to compare world sizes against",
    )
    parser.add_argument("--redo", action="store_true", help="rerun rows already in --out")
    parser.add_argument(
        "--plain-batch",
        type=int,
        default=None,
        help="train: also a plain run with this batch size "
        "(a torchrun rank's share of the batch: its batch-norm statistics)",
    )
    args = parser.parse_args()
    runs = {"torchrun": args.nproc, "plain": None}  # torchrun --nproc-per-node 1 still joins a process group
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from robusthash.app import zoo
    from robusthash.results import load_results

    rows = Rows(Path(args.out), COMMAND, KEY, device=args.device)
    model = str(zoo.get("fashion-mnist-dph-32").path)
    common = ["--device", args.device, "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "attack" in args.checks:
            docs = {}
            for launcher, n in runs.items():
                out = tmp / f"attack-{launcher}"
                wall = robusthash(
                    [
                        "attack",
                        "--model",
                        model,
                        "--protocol",
                        "pgd20",
                        "--gallery-queries",
                        "0",
                        "--out",
                        str(out),
                        *common,
                    ],
                    n,
                )
                docs[launcher] = doc = load_results(out / "attack_results.json")
                rows.add(
                    {
                        "check": "attack",
                        "launcher": launcher,
                        "world_size": doc.world_size,
                        "device": args.device,
                        "command_seconds": wall,
                        "map": {a.name: a.map for a in doc.attacks},
                        "robust_map": doc.robust_map,
                        "crafting_wall_seconds": {a.name: a.wall_seconds for a in doc.attacks},
                        "crafting_summed_seconds": {a.name: a.seconds for a in doc.attacks},
                    }
                )
            same = all(
                a.scores.ap == b.scores.ap
                for a, b in zip(docs["torchrun"].attacks, docs["plain"].attacks, strict=True)
            )
            print(f"attack: per-query AP identical across world sizes: {same}", flush=True)
            rows.add(
                {
                    "check": "attack-identical",
                    "launcher": "torchrun",
                    "world_size": args.nproc,
                    "device": args.device,
                    "identical": same,
                }
            )
        seeds = [int(s) for s in args.spread_seeds.split(",") if s.strip()]
        spread = {f"{k}-seed{s}": (n, s, []) for s in seeds for k, n in runs.items()}
        if args.plain_batch:
            spread[f"plain-batch{args.plain_batch}"] = (None, 0, ["--batch-size", str(args.plain_batch)])
        for check in ("train", "defend"):
            if check not in args.checks:
                continue
            variants = {k: (n, 0, []) for k, n in runs.items()} | (spread if check == "train" else {})
            for launcher, (n, seed, extra) in variants.items():
                if (
                    rows.has(check=check, launcher=launcher, world_size=n or 1, device=args.device)
                    and not args.redo
                ):
                    continue
                out = tmp / f"{check}-{launcher}.pt"
                if check == "train":
                    cmd = ["train", "--out", str(out), "--no-resume", "--seed", str(seed), *extra, *common]
                else:
                    cmd = [
                        "defend",
                        "--model",
                        model,
                        "--method",
                        "cgat",
                        "--out",
                        str(out),
                        "--no-resume",
                        *common,
                    ]
                wall = robusthash(cmd, n)
                evaluated = tmp / f"{check}-{launcher}-attack"
                robusthash(
                    [
                        "attack",
                        "--model",
                        str(out),
                        "--attack",
                        "pga",
                        "--protocol",
                        "pgd20",
                        "--gallery-queries",
                        "0",
                        "--out",
                        str(evaluated),
                        *common,
                    ],
                    None,
                )
                doc = load_results(evaluated / "attack_results.json")
                rows.add(
                    {
                        "check": check,
                        "launcher": launcher,
                        "world_size": n or 1,
                        "device": args.device,
                        "command_seconds": wall,
                        "clean_map": doc.clean.map,
                        "pga_map": doc.attacks[0].map,
                    }
                )
                print(
                    f"{check} {launcher} ({n or 1} process(es)): clean mAP@1000 {doc.clean.map:.4f}, "
                    f"PgA {doc.attacks[0].map:.4f}, {wall:.0f} s",
                    flush=True,
                )
    print(json.dumps(rows.rows, indent=1)[:4000])
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
