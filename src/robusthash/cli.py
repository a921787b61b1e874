"""The ``robusthash`` command line. User mistakes print one line and exit with code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from robusthash.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _add_data_options(p: argparse.ArgumentParser, required: bool = False, default: str | None = None) -> None:
    p.add_argument(
        "--dataset",
        required=required,
        default=default,
        help="dataset name (see 'robusthash datasets')" + (f"; default {default}" if default else ""),
    )
    p.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    p.add_argument(
        "--database",
        default=None,
        help="database size (a multiple of 10) or 'all' for Fashion-MNIST data; default 10000",
    )
    p.add_argument(
        "--split-seed", type=int, default=None, help="seed of the train/query/database draw (default 0)"
    )
    p.add_argument("--image-size", type=int, default=None, help="image side for list datasets (default 224)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of everything random in this run (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from robusthash.attacks import list_attacks
    from robusthash.defenses import list_defenses
    from robusthash.losses import list_losses
    from robusthash.models import list_models
    from robusthash.robustness import DEFAULT_ATTACKS, PROTOCOLS

    parser = argparse.ArgumentParser(
        prog="robusthash",
        description="Train, attack, defend and report on deep-hashing image retrieval models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("datasets", help="list the datasets and where they are read from")
    p.set_defaults(handler=cmd_datasets)

    p = sub.add_parser("train", help="train a hashing model and save a checkpoint")
    _add_data_options(p, default="fashion-mnist")
    p.add_argument("--backbone", default="small_cnn", help=f"one of: {', '.join(list_models())}")
    p.add_argument("--pretrained", default=None, help="local torchvision ImageNet weights for the backbone")
    p.add_argument(
        "--input-size",
        type=_positive_int,
        default=None,
        help="resize inputs to this side inside the model (e.g. 64 for efficientnet_lite0)",
    )
    p.add_argument("--bits", type=_positive_int, default=32, help="code length K (default 32)")
    p.add_argument("--loss", default="dph", help=f"one of: {', '.join(list_losses())} (default dph)")
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help="training epochs (default: the recipe's)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", default=None, help="adamw (default) or sgd (the papers' recipe)")
    p.add_argument("--out", default="runs/model.pt", help="checkpoint path (default runs/model.pt)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    _add_run_options(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="clean retrieval: mAP@K, PR and P@N of the query set")
    p.add_argument("--model", required=True, help="checkpoint to evaluate")
    _add_data_options(p)
    p.add_argument("--topk", type=int, default=None, help="mAP cut-off (default 1000; 0 = whole database)")
    p.add_argument("--out", default=None, help="results JSON (default: next to the checkpoint)")
    _add_run_options(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("attack", help="attack the query set and report mAP under each attack")
    p.add_argument("--model", required=True, help="checkpoint to attack")
    _add_data_options(p)
    p.add_argument(
        "--attack",
        default=",".join(DEFAULT_ATTACKS),
        help=f"comma-separated attacks from: {', '.join(list_attacks())} (default {','.join(DEFAULT_ATTACKS)})",
    )
    p.add_argument(
        "--protocol",
        default="default",
        choices=PROTOCOLS,
        help="default: each attack's published optimiser and iterations; pgd20: all PGD, 20 steps",
    )
    p.add_argument(
        "--steps", type=_positive_int, default=None, help="override every attack's iteration count"
    )
    p.add_argument(
        "--eps", type=float, default=8.0, help="L-inf budget in pixel levels out of 255 (default 8)"
    )
    p.add_argument(
        "--queries", type=_positive_int, default=None, help="attack this many queries (seeded subset)"
    )
    p.add_argument("--topk", type=int, default=None, help="mAP cut-off (default 1000; 0 = whole database)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="images per attack batch")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint>-attacks/)")
    _add_run_options(p)
    p.set_defaults(handler=cmd_attack)

    p = sub.add_parser("defend", help="adversarially train a checkpoint (CgAT, ATRDH or PgA-AT)")
    p.add_argument("--model", required=True, help="clean pre-trained checkpoint to start from")
    p.add_argument("--method", default="cgat", help=f"one of: {', '.join(list_defenses())} (default cgat)")
    _add_data_options(p)
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help="adversarial-training epochs (default 3)"
    )
    p.add_argument(
        "--lam", type=float, default=None, help="weight lambda of the adversarial loss (default 1)"
    )
    p.add_argument(
        "--steps", type=_positive_int, default=None, help="PGD steps of the training attack (default 7)"
    )
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: the method's published one)"
    )
    p.add_argument(
        "--similarity",
        default=None,
        choices=["binary", "dice", "jaccard"],
        help="label similarity of the center codes (CgAT default binary, PgA-AT dice)",
    )
    p.add_argument("--out", default=None, help="defended checkpoint (default: <checkpoint>-<method>.pt)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    _add_run_options(p)
    p.set_defaults(handler=cmd_defend)

    p = sub.add_parser("report", help="turn results JSON files into an HTML page, Markdown and CSV tables")
    p.add_argument("results", nargs="+", help="attack results, a demo's results.json, or benchmark rows")
    p.add_argument("--out", default="runs/report", help="output folder (default runs/report)")
    p.add_argument(
        "--no-gallery", action="store_true", help="skip the retrieval gallery (needs the checkpoints)"
    )
    _add_run_options(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "demo", help="the embedded default end to end: train, attack, defend, re-attack, write the report"
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    _add_run_options(p)
    p.set_defaults(handler=cmd_demo)
    return parser


def _dataset_options(args: argparse.Namespace, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options that reproduce a split: command line first, then what a checkpoint recorded."""
    stored = stored or {}
    database: Any = args.database if args.database is not None else stored.get("database", 10_000)
    if database != "all":
        try:
            database = int(database)
        except ValueError:
            raise UserError(f"--database must be an integer or 'all', got {database!r}") from None
    return {
        "name": args.dataset or stored.get("name") or "fashion-mnist",
        "data_dir": args.data_dir if args.data_dir is not None else stored.get("data_dir"),
        "database": database,
        "split_seed": args.split_seed if args.split_seed is not None else stored.get("split_seed", 0),
        "image_size": args.image_size if args.image_size is not None else stored.get("image_size"),
    }


def load_data(options: dict[str, Any]):  # noqa: ANN201 - DatasetSplits, imported lazily
    from robusthash.data import load_dataset

    return load_dataset(
        options["name"],
        options["data_dir"],
        options["split_seed"],
        options["database"],
        options["image_size"],
    )


def cmd_datasets(args: argparse.Namespace) -> int:
    from robusthash.data import dataset_spec, list_datasets

    for name in list_datasets():
        spec = dataset_spec(name)
        print(f"{name:16s} {spec.description}\n{'':16s} read from: {spec.location()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robusthash.evaluation import evaluate_retrieval
    from robusthash.runtime import resolve_device
    from robusthash.training import TrainConfig, train

    device = resolve_device(args.device)
    options = _dataset_options(args)
    data = load_data(options)
    overrides = {
        k: v for k, v in {
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer,
        }.items() if v is not None
    }  # fmt: skip
    config = TrainConfig(backbone=args.backbone, bits=args.bits, loss=args.loss, seed=args.seed,
                         pretrained=args.pretrained, input_size=args.input_size, **overrides)  # fmt: skip
    result = train(data, config, args.out, device, resume=not args.no_resume, dataset_options=options,
                   quiet=args.quiet)  # fmt: skip
    report = evaluate_retrieval(result.model, data, device, topk=1000)
    print(f"saved {args.out}: {config.loss} {config.bits} bits on {data.name}, "
          f"clean mAP@1000 = {report['map']:.4f} ({result.seconds:.0f} s of training)")  # fmt: skip
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from robusthash.checkpoint import check_matches_data, read_checkpoint
    from robusthash.evaluation import evaluate_retrieval
    from robusthash.report.results import results_document, write_results
    from robusthash.runtime import resolve_device, seed_everything

    device = resolve_device(args.device)
    seed_everything(args.seed)
    ckpt = read_checkpoint(args.model)
    options = _dataset_options(args, ckpt.meta.get("dataset"))
    data = load_data(options)
    check_matches_data(ckpt.meta, data, args.model)
    model = ckpt.build_model(device)
    topk = 1000 if args.topk is None else (None if args.topk == 0 else args.topk)
    report = evaluate_retrieval(model, data, device, topk, quiet=args.quiet)
    out = Path(args.out) if args.out else Path(args.model).with_suffix(".eval.json")
    doc = results_document("evaluate", {"model": args.model, "dataset": options, "topk": topk},
                           args.seed, device, ckpt.meta, {"clean": report})  # fmt: skip
    write_results(doc, out)
    print(f"clean mAP@{report['topk']} = {report['map']:.4f} ({data.name}, {ckpt.meta['model']['bits']} bits); "
          f"results in {out}")  # fmt: skip
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from robusthash.checkpoint import check_matches_data, read_checkpoint
    from robusthash.robustness import AttackSuite, evaluate_attacks
    from robusthash.runtime import resolve_device, seed_everything

    device = resolve_device(args.device)
    seed_everything(args.seed)
    if not 0 <= args.eps <= 255:
        raise UserError(f"--eps is in pixel levels and must lie in [0, 255], got {args.eps}")
    suite = AttackSuite(
        attacks=[a.strip() for a in args.attack.split(",") if a.strip()], protocol=args.protocol,
        steps=args.steps, eps=args.eps / 255, topk=1000 if args.topk is None else (args.topk or None),
        queries=args.queries, batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    suite.validate()
    ckpt = read_checkpoint(args.model)
    options = _dataset_options(args, ckpt.meta.get("dataset"))
    data = load_data(options)
    check_matches_data(ckpt.meta, data, args.model)
    model = ckpt.build_model(device)
    results = evaluate_attacks(model, data, suite, device, quiet=args.quiet)
    out = (
        Path(args.out)
        if args.out
        else Path(args.model).with_suffix("").with_name(Path(args.model).stem + "-attacks")
    )
    write_attack_outputs(results, suite, options, ckpt.meta, args.seed, device, out, args.model)
    return 0


def write_attack_outputs(results, suite, options, meta, seed, device, out: Path, model_path: str) -> None:  # noqa: ANN001
    """JSON, Markdown table and PR / P@N figures of an attack run, and the table on stdout."""
    from dataclasses import asdict

    from robusthash.report.plots import plot_pr_and_pn
    from robusthash.report.results import results_document, write_results
    from robusthash.report.tables import attack_table

    doc = results_document("attack", {"model": model_path, "dataset": options, "suite": asdict(suite)},
                           seed, device, meta, results)  # fmt: skip
    write_results(doc, out / "attack_results.json")
    title = (f"{meta['train']['loss']} / {meta['model']['backbone']} / {meta['model']['bits']} bits on "
             f"{options['name']}, protocol {suite.protocol}, eps {suite.eps * 255:.0f}/255, "
             f"{results['queries']} queries, seed {seed}")  # fmt: skip
    table = attack_table(results, title)
    (out / "attack_table.md").write_text(table, encoding="utf-8")
    plot_pr_and_pn(results, title, out)
    print(table)
    print(f"results: {out / 'attack_results.json'} (+ attack_table.md, pr_curve.png, p_at_n.png)")


def cmd_defend(args: argparse.Namespace) -> int:
    from robusthash.checkpoint import check_matches_data, read_checkpoint
    from robusthash.defenses import DefenseConfig, defend, defense_class
    from robusthash.evaluation import evaluate_retrieval
    from robusthash.runtime import resolve_device

    device = resolve_device(args.device)
    defense_class(args.method)
    overrides = {k: v for k, v in {"epochs": args.epochs, "lam": args.lam, "steps": args.steps, "lr": args.lr,
                                   "similarity": args.similarity}.items() if v is not None}  # fmt: skip
    config = DefenseConfig(method=args.method, seed=args.seed, **overrides)
    config.validate()
    base = read_checkpoint(args.model)
    if base.meta.get("kind") == "defended":
        raise UserError(
            f"{args.model} is already a defended model; start from the clean checkpoint it came from"
        )
    options = _dataset_options(args, base.meta.get("dataset"))
    data = load_data(options)
    check_matches_data(base.meta, data, args.model)
    out = (
        Path(args.out)
        if args.out
        else Path(args.model).with_name(f"{Path(args.model).stem}-{args.method}.pt")
    )
    result = defend(base, data, config, out, device, resume=not args.no_resume, quiet=args.quiet)
    report = evaluate_retrieval(result.model, data, device, topk=1000)
    print(f"saved {out}: {args.method} from {args.model}, clean mAP@1000 = {report['map']:.4f} "
          f"({result.seconds:.0f} s of adversarial training)")  # fmt: skip
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robusthash.report.build import build_report
    from robusthash.runtime import resolve_device, seed_everything

    seed_everything(args.seed)
    index = build_report(
        args.results, args.out, gallery=not args.no_gallery, device=resolve_device(args.device)
    )
    print(f"report: {index} (+ report.md, CSV tables, figures/)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from robusthash.demo import run_demo

    return run_demo(Path(args.out), args.data_dir, args.seed, args.device, args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return handler(args)
    except UserError as exc:
        print(f"robusthash: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "robusthash: interrupted (checkpoints written so far are complete; rerun to resume)",
            file=sys.stderr,
        )
        return 130
    except json.JSONDecodeError as exc:
        print(f"robusthash: error: a results file is not valid JSON: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
