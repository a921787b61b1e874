"""CgAT paper, at embedded scale: Tables 1 and 5 (mAP of undefended, ATRDH, PgA-AT and CgAT models under each
attack, 16/32/64 bits), Fig. 4 (CgAT against lambda) and Figs. 2-3 (PR and P@N under SDHA).

    python benchmarks/bench_defenses.py       # ~1 h on 2 CPU cores; resumable, rows already done are kept

DPSH models on small_cnn (the CgAT paper's L_ori), 3 epochs of adversarial training per defence (the
embedded default), every attack run as PGD-20 on all 1,000 queries (attacks at their default 1,500-2,000
iterations on four models per setting would take most of a day on this machine). fashion-mosaic, whose images
are 4x larger, runs at 32 bits only. Rows go to benchmarks/results/defenses.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import CACHE, RESULTS, Rows, checkpoint_meta, dataset, flat, trained_model

from robusthash.checkpoint import read_checkpoint
from robusthash.defenses import DefenseConfig, defend
from robusthash.robustness import AttackSuite, evaluate_attacks

COMMAND = "python benchmarks/bench_defenses.py"
ATTACKS = ["p2p", "dhta", "hag", "sdha", "pga"]
DEFENSES = ["atrdh", "pga-at", "cgat"]
KEY = ("dataset", "bits", "defense", "lam", "attack")


def evaluate(
    rows: Rows, name: str, bits: int, defense: str, lam: float | None, ckpt: Path, loss: str
) -> None:
    if rows.has(dataset=name, bits=bits, defense=defense, lam=lam, attack="robust"):
        return
    suite = AttackSuite(attacks=ATTACKS, protocol="pgd20", topk=1000, seed=0)
    res = flat(evaluate_attacks(read_checkpoint(ckpt).build_model(), dataset(name), suite, quiet=True))
    base = {
        "dataset": name,
        "bits": bits,
        "defense": defense,
        "lam": lam,
        "loss": loss,
        "protocol": "pgd20",
        "queries": res["queries"],
    }
    rows.add({**base, "attack": "clean", "map": res["clean"]["map"], "checkpoint": checkpoint_meta(ckpt)})
    for a, r in res["attacks"].items():
        rows.add(
            {
                **base,
                "attack": a,
                "map": r["map"],
                "tmap": r.get("tmap"),
                "bits_flipped": r["bits_flipped"],
                "seconds_per_image": r["seconds_per_image"],
                "pr_curve": r["pr_curve"],
                "p_at_n": r["p_at_n"],
            }
        )
    rows.add({**base, "attack": "robust", "map": res["robust_map"]})
    print(
        f"{name:15s} {bits:3d} {defense:7s} lam={lam}: clean {res['clean']['map']:.4f} "
        + " ".join(f"{a} {r['map']:.4f}" for a, r in res["attacks"].items())
        + f" robust {res['robust_map']:.4f}",
        flush=True,
    )


def defended(base: Path, name: str, method: str, lam: float) -> Path:
    out = CACHE / f"{base.stem}-{method}-lam{lam:g}.pt"
    defend(read_checkpoint(base), dataset(name), DefenseConfig(method=method, lam=lam), out, quiet=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--settings", default="fashion-mnist:16,fashion-mnist:32,fashion-mnist:64,fashion-mosaic:32"
    )
    parser.add_argument("--loss", default="dpsh")
    parser.add_argument(
        "--lambdas", default="0.25,0.5,1,2", help="CgAT lambda sweep on Fashion-MNIST 32 bits"
    )
    parser.add_argument("--out", default=str(RESULTS / "defenses.json"))
    parser.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY)
    for setting in args.settings.split(","):
        name, bits = setting.split(":")
        base = trained_model(name, int(bits), loss=args.loss)
        evaluate(rows, name, int(bits), "none", None, base, args.loss)
        for method in DEFENSES:
            evaluate(rows, name, int(bits), method, 1.0, defended(base, name, method, 1.0), args.loss)
    base = trained_model("fashion-mnist", 32, loss=args.loss)
    for lam in [float(x) for x in args.lambdas.split(",")]:
        evaluate(
            rows, "fashion-mnist", 32, "cgat", lam, defended(base, "fashion-mnist", "cgat", lam), args.loss
        )
    if args.markdown:
        from views import defense_benchmark_markdown

        out = Path(args.markdown)
        markdown = defense_benchmark_markdown(rows.rows, out.parent / "figures")
        Path(args.markdown).write_text(markdown, encoding="utf-8")
        rows.set_markdown(markdown)  # robusthash report shows it
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
