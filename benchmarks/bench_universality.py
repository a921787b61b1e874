"""Universality (PgA Table 6, CgAT Table 6) at embedded scale: every registered hashing method on Fashion-MNIST at
32 bits, undefended and defended by ATRDH and CgAT, clean and under P2P, DHTA, HAG, SDHA and PgA (all as PGD-20
on the 1,000 queries). Also the pretrained EfficientNet-Lite0 backbone against small_cnn (clean and PgA mAP).

    python benchmarks/bench_universality.py --markdown docs/universality.md   # ~1 h on 2 CPU cores; resumable

Rows go to benchmarks/results/universality.json (method, defense, attack, map, ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import CACHE, RESULTS, Rows, checkpoint_meta, dataset, flat, trained_model

from robusthash.checkpoint import read_checkpoint
from robusthash.defenses import DefenseConfig, defend
from robusthash.losses import list_losses
from robusthash.robustness import AttackSuite, evaluate_attacks

COMMAND = "python benchmarks/bench_universality.py"
ATTACKS = ["p2p", "dhta", "hag", "sdha", "pga"]
KEY = ("method", "backbone", "defense", "attack")


def evaluate(rows: Rows, method: str, backbone: str, defense: str, ckpt: Path, attacks: list[str]) -> None:
    if rows.has(method=method, backbone=backbone, defense=defense, attack="robust"):
        return
    suite = AttackSuite(attacks=attacks, protocol="pgd20", topk=1000, seed=0)
    res = flat(
        evaluate_attacks(read_checkpoint(ckpt).build_model(), dataset("fashion-mnist"), suite, quiet=True)
    )
    base = {
        "dataset": "fashion-mnist",
        "bits": 32,
        "method": method,
        "backbone": backbone,
        "defense": defense,
        "protocol": "pgd20",
        "queries": res["queries"],
    }
    rows.add({**base, "attack": "clean", "map": res["clean"]["map"], "checkpoint": checkpoint_meta(ckpt)})
    for a, r in res["attacks"].items():
        rows.add({**base, "attack": a, "map": r["map"], "bits_flipped": r["bits_flipped"]})
    rows.add({**base, "attack": "robust", "map": res["robust_map"]})
    print(
        f"{method:8s} {backbone:18s} {defense:6s} clean {res['clean']['map']:.4f} "
        + " ".join(f"{a} {r['map']:.4f}" for a, r in res["attacks"].items()),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default=",".join(list_losses()))
    parser.add_argument("--out", default=str(RESULTS / "universality.json"))
    parser.add_argument("--no-pretrained", action="store_true", help="skip the EfficientNet-Lite0 comparison")
    parser.add_argument("--markdown", default=None, help="write the table to this Markdown file")
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for method in args.methods.split(","):
        base = trained_model("fashion-mnist", 32, loss=method)
        evaluate(rows, method, "small_cnn", "none", base, ATTACKS)
        for defense in ("atrdh", "cgat"):
            out = CACHE / f"{base.stem}-{defense}-lam1.pt"
            defend(
                read_checkpoint(base),
                dataset("fashion-mnist"),
                DefenseConfig(method=defense),
                out,
                quiet=True,
            )
            evaluate(rows, method, "small_cnn", defense, out, ATTACKS)
    if not args.no_pretrained:
        ckpt = trained_model(
            "fashion-mnist", 32, loss="dph", backbone="efficientnet_lite0", input_size=64, epochs=8
        )
        evaluate(rows, "dph", "efficientnet_lite0", "none", ckpt, ["pga"])
    if args.markdown:
        from views import universality_markdown

        markdown = universality_markdown(rows.rows)
        rows.publish(markdown, args.markdown)  # the doc page, and the rows for robusthash report
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
