"""CgAT paper, at embedded scale: Tables 1 and 5 (mAP of undefended, ATRDH, PgA-AT, CgAT and SAAT models under each
attack, 16/32/64 bits), Fig. 4 (CgAT against lambda) and Figs. 2-3 (PR and P@N under SDHA).

    python benchmarks/bench_defenses.py       # ~1 h on 2 CPU cores; resumable, rows already done are kept

DPSH models on small_cnn (the CgAT paper's L_ori), 3 epochs of adversarial training per defence (the
embedded default), every attack run as PGD-20 on all 1,000 queries (attacks at their default 1,500-2,000
iterations on four models per setting would take most of a day on this machine). fashion-mosaic, whose images
are 4x larger, runs at 32 bits only. Rows go to benchmarks/results/defenses.json.

CgAT Table 4 (black-box transfer, ``--nag-bits``): NAG crafted on three DPSH surrogates whose architectures
differ from the victims' small_cnn (torchvision ResNet-18 and ResNet-34, like the paper's ResNet-34/101, and
EfficientNet-Lite0 in place of its DenseNet-161, which costs ~6x ResNet-18 here), trained with the victims' recipe
(DPSH, 20 epochs; ~10-20 min each on one core); each surrogate's adversarial queries are crafted once and scored on
the undefended, ATRDH and CgAT victims, at the project's eps (8/255) and at the official code's effective budget
(32 steps of 1/255 = 32/255).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from common import CACHE, RESULTS, Rows, checkpoint_meta, dataset, flat, prosgan_options, trained_model

from robusthash import metrics
from robusthash.attacks import create_attack
from robusthash.checkpoint import read_checkpoint
from robusthash.defenses import DefenseConfig, defend
from robusthash.evaluation import encode_images
from robusthash.robustness import (
    AttackSuite,
    Banks,
    craft,
    evaluate_attacks,
    query_images,
    query_subset,
    score,
)
from robusthash.runtime import environment

COMMAND = "python benchmarks/bench_defenses.py"
ATTACKS = ["p2p", "dhta", "hag", "sdha", "pga"]
DEFENSES = ["atrdh", "pga-at", "cgat", "saat"]
KEY = (
    "dataset",
    "bits",
    "defense",
    "lam",
    "attack",
    "budget",
)  # budget: NAG's eps in pixel levels (else None)
SURROGATES = ("resnet18", "resnet34", "efficientnet_lite0")
NAG_VICTIMS = (("none", None), ("atrdh", 1.0), ("cgat", 1.0))
NAG_BUDGETS = (8, 32)  # eps in levels of 255: the project's, and the official code's effective 32 x 1/255


def device_field(device: str | torch.device) -> dict[str, str]:
    """What a row says of where it ran: nothing on the CPU (every older row ran there), else the device's name."""
    return {} if torch.device(device).type == "cpu" else {"device": environment(device)["device_name"]}


def evaluate(
    rows: Rows,
    name: str,
    bits: int,
    defense: str,
    lam: float | None,
    ckpt: Path,
    loss: str,
    device: str = "cpu",
) -> None:
    if rows.has(dataset=name, bits=bits, defense=defense, lam=lam, attack="robust"):
        return
    suite = AttackSuite(attacks=ATTACKS, protocol="pgd20", topk=1000, seed=0)
    res = flat(
        evaluate_attacks(read_checkpoint(ckpt).build_model(device), dataset(name), suite, device, quiet=True)
    )
    base = {
        "dataset": name,
        "bits": bits,
        "defense": defense,
        "lam": lam,
        "loss": loss,
        "protocol": "pgd20",
        "queries": res["queries"],
        **device_field(device),
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


def generator_attack(
    rows: Rows,
    name: str,
    bits: int,
    defense: str,
    lam: float | None,
    ckpt: Path,
    loss: str,
    device: str = "cpu",
) -> None:
    """ProS-GAN (CgAT Tables 1-3) on all queries: unbounded as published, the embedded-scale recipe, its generator
    checkpointed next to the model. Kept out of the robust column, which is the worst case within eps 8/255."""
    if rows.has(dataset=name, bits=bits, defense=defense, lam=lam, attack="prosgan"):
        return
    suite = AttackSuite(
        attacks=["prosgan"], topk=1000, seed=0, attack_options={"prosgan": prosgan_options(ckpt)}
    )
    res = flat(
        evaluate_attacks(read_checkpoint(ckpt).build_model(device), dataset(name), suite, device, quiet=True)
    )
    r = res["attacks"]["prosgan"]
    rows.add(
        {
            "dataset": name,
            "bits": bits,
            "defense": defense,
            "lam": lam,
            "loss": loss,
            "protocol": "default",
            "queries": res["queries"],
            "attack": "prosgan",
            "map": r["map"],
            "tmap": r["tmap"],
            "linf": r["linf"],
            "l2": r["l2"],
            "threat_model": r["threat_model"],
            "seconds_per_image": r["seconds_per_image"],
            "fit_seconds": r["fit_seconds"],
            "settings": r["settings"],
            **device_field(device),
        }
    )
    print(
        f"{name:15s} {bits:3d} {defense:7s} lam={lam}: ProS-GAN mAP {r['map']:.4f} t-mAP {r['tmap']:.4f} "
        f"L-inf {r['linf']:.3f}",
        flush=True,
    )


def defended(base: Path, name: str, method: str, lam: float, device: str = "cpu") -> Path:
    out = CACHE / f"{base.stem}-{method}-lam{lam:g}.pt"
    config = DefenseConfig(
        method=method, method_options={"lam": lam} if lam != 1.0 else {}
    )  # lam: CgAT's sweep
    defend(read_checkpoint(base), dataset(name), config, out, device, quiet=True)
    return out


# SAAT with CgAT's optimiser (SGD lr 0.01, momentum 0.9, weight decay 5e-4) instead of its own (lr 0.05, no
# momentum, 1e-5): on single-label data SAAT's mainstay code is CgAT's center code, so this row tells how much of
# the gap between the two is the optimiser (its row's defence label; not a column of the tables)
SAAT_WITH_CGAT_SGD = "saat-cgat-sgd"


def saat_with_cgat_sgd(base: Path, name: str, device: str = "cpu") -> Path:
    out = CACHE / f"{base.stem}-{SAAT_WITH_CGAT_SGD}.pt"
    config = DefenseConfig(method="saat", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4)
    defend(read_checkpoint(base), dataset(name), config, out, device, quiet=True)
    return out


def _mean_ap(codes: torch.Tensor, banks: Banks, labels: torch.Tensor) -> float:
    return float(
        metrics.mean_average_precision(codes, banks.database.codes, labels, banks.database.labels, 1000)
    )


def nag_table(rows: Rows, bits: int, loss: str, queries: int, device: torch.device) -> None:
    """CgAT Table 4 at embedded scale for one code length: NAG from each surrogate (crafted once per budget on
    the surrogate, which alone is differentiated) scored on each victim; rows also keep the surrogate's own clean
    mAP and white-box t-mAP, so a weak transfer can be told from a weak attack. Surrogates missing from the cache
    are trained on ``device``; each row names the device it was crafted on."""
    name = "fashion-mnist"
    data = dataset(name)
    base = trained_model(name, bits, loss=loss, device=str(device))
    indices = query_subset(data, queries, 0)
    images, labels = query_images(data, indices)
    victims: dict[str, tuple] = {}

    def victim(defense: str, lam: float | None) -> tuple:
        if defense not in victims:
            ckpt = base if defense == "none" else defended(base, name, defense, lam, str(device))
            model = read_checkpoint(ckpt).build_model(device)
            victims[defense] = (model, Banks.of(model, data, device), encode_images(model, images, device))
        return victims[defense]

    for backbone in SURROGATES:
        for budget in NAG_BUDGETS:
            key = {"dataset": name, "bits": bits, "attack": f"nag@{backbone}", "budget": budget}
            todo = [(d, lam) for d, lam in NAG_VICTIMS if not rows.has(defense=d, lam=lam, **key)]
            if not todo:
                continue
            ckpt = trained_model(name, bits, loss=loss, backbone=backbone, device=str(device))
            surrogate = read_checkpoint(ckpt).build_model(device)
            own = Banks.of(surrogate, data, device)
            suite = AttackSuite(attacks=["nag"], eps=budget / 255, queries=queries, seed=0)
            attack = create_attack(
                "nag",
                surrogate,
                reference=own.reference,
                database=own.database,
                quiet=True,
                **suite.options("nag"),
            )
            crafted = craft(
                attack, surrogate, images, labels, indices, device, keep=indices, surrogate=backbone
            )
            adversarial = torch.stack([crafted.kept[int(i)] for i in indices.tolist()])
            surrogate_clean = encode_images(surrogate, images, device)
            on_surrogate = score(crafted, surrogate_clean, labels, own.database, 1000)
            surrogate_clean_map = _mean_ap(surrogate_clean, own, labels)
            for defense, lam in todo:
                model, banks, clean_codes = victim(defense, lam)
                codes = encode_images(model, adversarial, device)
                r = score(replace(crafted, codes=codes, kept={}), clean_codes, labels, banks.database, 1000)
                rows.add(
                    {
                        **key,
                        "defense": defense,
                        "lam": lam,
                        "loss": loss,
                        "protocol": "nag",
                        "queries": len(indices),
                        "surrogate": backbone,
                        "threat_model": r.threat_model,
                        "map": r.map,
                        "tmap": r.tmap,
                        "success": sum(r.success) / len(r.success),
                        "clean_map": _mean_ap(clean_codes, banks, labels),
                        "surrogate_clean_map": surrogate_clean_map,
                        "surrogate_tmap": on_surrogate.tmap,
                        "linf": max(r.linf),
                        "seconds_per_image": r.seconds_per_image,
                        "settings": r.settings,
                        "surrogate_checkpoint": checkpoint_meta(ckpt),
                        **device_field(device),
                    }
                )
                print(
                    f"NAG {bits} bits eps {budget}/255 from {backbone:18s} on {defense:6s}: mAP {r.map:.4f} "
                    f"t-mAP {r.tmap:.4f} (white-box t-mAP on the surrogate {on_surrogate.tmap:.4f})",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--settings", default="fashion-mnist:16,fashion-mnist:32,fashion-mnist:64,fashion-mosaic:32"
    )
    parser.add_argument("--loss", default="dpsh")
    parser.add_argument(
        "--lambdas", default="0.25,0.5,1,2", help="CgAT lambda sweep on Fashion-MNIST 32 bits ('' skips it)"
    )
    parser.add_argument("--nag-bits", default="16,32,64", help="code lengths of the NAG table ('' skips it)")
    parser.add_argument("--nag-queries", type=int, default=1000)
    parser.add_argument(
        "--no-prosgan", action="store_true", help="skip ProS-GAN (a generator trained per model)"
    )
    parser.add_argument("--skip-white-box", action="store_true", help="only the NAG table")
    parser.add_argument(
        "--saat-ablation",
        action="store_true",
        help="also SAAT trained with CgAT's optimiser (Fashion-MNIST, 32 bits): how much of SAAT-CgAT is the optimiser",
    )
    parser.add_argument(
        "--device", default="cpu", help="where models train and attacks run (cpu, cuda, cuda:1)"
    )
    parser.add_argument("--out", default=str(RESULTS / "defenses.json"))
    parser.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    args = parser.parse_args()
    rows = Rows(Path(args.out), COMMAND, KEY, device=args.device)
    for bits in [int(b) for b in args.nag_bits.split(",") if b]:
        nag_table(rows, bits, args.loss, args.nag_queries, torch.device(args.device))
    generators = []  # ProS-GAN after every PGD-20 table, PgA-AT's last (CgAT Tables 1-3 have no PgA-AT row)
    for setting in [] if args.skip_white_box else args.settings.split(","):
        name, bits = setting.split(":")
        base = trained_model(name, int(bits), loss=args.loss, device=args.device)
        models = [("none", None, base)] + [
            (m, 1.0, defended(base, name, m, 1.0, args.device)) for m in DEFENSES
        ]
        for defense, lam, ckpt in models:
            evaluate(rows, name, int(bits), defense, lam, ckpt, args.loss, args.device)
        generators += [(name, int(bits), *model) for model in models]
    for name, bits, defense, lam, ckpt in (
        [] if args.no_prosgan else sorted(generators, key=lambda g: g[2] == "pga-at")
    ):
        generator_attack(rows, name, bits, defense, lam, ckpt, args.loss, args.device)
    if args.saat_ablation:
        base = trained_model("fashion-mnist", 32, loss=args.loss, device=args.device)
        ckpt = saat_with_cgat_sgd(base, "fashion-mnist", args.device)
        evaluate(rows, "fashion-mnist", 32, SAAT_WITH_CGAT_SGD, 1.0, ckpt, args.loss, args.device)
    for lam in [] if args.skip_white_box else [float(x) for x in args.lambdas.split(",") if x]:
        base = trained_model("fashion-mnist", 32, loss=args.loss, device=args.device)
        cgat = defended(base, "fashion-mnist", "cgat", lam, args.device)
        evaluate(rows, "fashion-mnist", 32, "cgat", lam, cgat, args.loss, args.device)
    if args.markdown:
        from views import defense_benchmark_markdown

        out = Path(args.markdown)
        markdown = defense_benchmark_markdown(rows.rows, out.parent / "figures")
        rows.publish(markdown, args.markdown)  # the doc page, and the rows for robusthash report
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
