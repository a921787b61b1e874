"""The ``robusthash`` command line. User mistakes print one line and exit with code 2, never a traceback.

The flags of ``train``, ``attack`` and ``defend`` are derived from the config dataclasses
(:class:`~robusthash.training.TrainConfig`, :class:`~robusthash.robustness.AttackSuite`,
:class:`~robusthash.defenses.DefenseConfig`): every field is a flag, with the field's help and default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robusthash.errors import UserError

if TYPE_CHECKING:
    import torch

Handler = Callable[[argparse.Namespace], int]


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset name (see 'robusthash datasets'); default: the checkpoint's, else fashion-mnist",
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


def _threads(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text!r}")
    return value


def _add_run_options(p: argparse.ArgumentParser, seed: bool = True) -> None:
    if seed:
        p.add_argument(
            "--seed", type=int, default=0, help="seed of everything random in this run (default 0)"
        )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=_threads,
        default=None,
        help="CPU threads: a count, or auto (default): the "
        "cores other work leaves idle, at least 1 (more threads than idle cores run slower)",
    )
    p.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="on CUDA, autotune the convolution kernels: "
        "faster (an H200: 1.2x fp32, 2.5x bf16), but floats may differ between runs of one seed",
    )


def _add_model_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--model",
        required=True,
        help=f"{what}: a robusthash checkpoint, a zoo model's name (e.g. "
        "fashion-mnist-dph-32-cgat), or a state dict with --model-def / --backbone",
    )
    p.add_argument(
        "--model-def",
        default=None,
        help="path/to/file.py:factory building your nn.Module (images "
        "in [0, 1] -> (N, K) codes); --model is then its state dict or a checkpoint robusthash wrote",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="with a state dict of the field's public code (DeepHash-pytorch, "
        "CgAT / ProS-GAN layouts): its backbone, e.g. alexnet, vgg11, resnet50",
    )
    p.add_argument(
        "--bits", type=int, default=None, help="with --backbone: the code length of that state dict"
    )
    p.add_argument(
        "--model-output",
        default="tanh",
        choices=["tanh", "preactivation"],
        help="what the --model-def module returns (default tanh)",
    )
    p.add_argument(
        "--loss",
        dest="model_loss",
        default="dph",
        help="hashing loss of a brought model, for defences (default dph)",
    )


def _datasets_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=cmd_datasets)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from robusthash.config import add_arguments
    from robusthash.training import TrainConfig

    _add_data_options(p)
    add_arguments(p, TrainConfig)
    p.add_argument("--out", default="runs/model.pt", help="checkpoint path (default runs/model.pt)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    _add_run_options(p, seed=False)
    p.set_defaults(handler=cmd_train)


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    _add_model_options(p, "model to evaluate")
    _add_data_options(p)
    p.add_argument("--topk", type=int, default=1000, help="mAP cut-off (default 1000; 0 = whole database)")
    p.add_argument("--out", default=None, help="results JSON (default: next to the checkpoint)")
    p.add_argument(
        "--store",
        default=None,
        help="folder of a bit-packed, memory-mapped code store: the database "
        "is encoded into it in chunks (resuming a killed run) and scored by streaming, in bounded "
        "memory, for databases of millions of images",
    )
    p.add_argument(
        "--chunk", type=int, default=65536, help="database items per chunk of --store (default 65536)"
    )
    _add_run_options(p)
    p.set_defaults(handler=cmd_evaluate)


def _attack_arguments(p: argparse.ArgumentParser) -> None:
    from robusthash.config import add_arguments
    from robusthash.robustness import AttackSuite

    _add_model_options(p, "model to attack (the victim)")
    p.add_argument(
        "--surrogate", default=None, help="checkpoint(s), comma-separated, that craft transfer attacks"
    )
    _add_data_options(p)
    add_arguments(p, AttackSuite, skip=["attacks"])
    p.add_argument(
        "--attack",
        dest="attacks",
        default=None,
        type=lambda t: [a for a in t.split(",") if a.strip()],
        help="comma-separated attacks (see 'robusthash datasets'); default pga,hag,sdha,p2p,dhta; "
        "under --protocol robust the cascade, then these",
    )
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint>-attacks/)")
    _add_run_options(p, seed=False)
    p.set_defaults(handler=cmd_attack)


def _defend_arguments(p: argparse.ArgumentParser) -> None:
    from robusthash.config import add_arguments
    from robusthash.defenses import DefenseConfig

    _add_model_options(p, "clean pre-trained model to start from")
    _add_data_options(p)
    add_arguments(p, DefenseConfig)
    p.add_argument("--out", default=None, help="defended checkpoint (default: <checkpoint>-<method>.pt)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    _add_run_options(p, seed=False)
    p.set_defaults(handler=cmd_defend)


def _certify_arguments(p: argparse.ArgumentParser) -> None:
    from robusthash.certify import CertifySettings, SmoothingConfig
    from robusthash.config import add_arguments

    _add_model_options(p, "model to certify")
    _add_data_options(p)
    add_arguments(p, SmoothingConfig, skip=["radii"])
    add_arguments(p, CertifySettings)
    p.add_argument(
        "--radius",
        dest="radii",
        type=_floats,
        default=None,
        help="L2 radii to certify, comma-separated, in [0, 1] image units (default 0,0.25,0.5)",
    )
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint>-certify/)")
    _add_run_options(p, seed=False)
    p.set_defaults(handler=cmd_certify)


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _benchmark_arguments(p: argparse.ArgumentParser) -> None:
    from robusthash.cards import CardProtocol

    _add_model_options(p, "model to measure")
    _add_data_options(p)
    p.add_argument(
        "--surrogate",
        default=None,
        help="checkpoint(s), comma-separated, that craft transfer attacks (listed on the card, not ranked)",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=CardProtocol.queries,
        help=f"queries of the protocol (default {CardProtocol.queries}; another count is another protocol: its card "
        "is shown apart on the leaderboard)",
    )
    p.add_argument("--name", default=None, help="the model's name on the card (default: the --model name)")
    p.add_argument("--out", default=None, help="card file (default: <model>-card.json, + .md beside it)")
    _add_run_options(p)
    p.set_defaults(handler=cmd_benchmark)


def _leaderboard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cards", nargs="*", help="card files (robusthash benchmark) to rank beside the zoo's")
    p.add_argument("--no-zoo", action="store_true", help="leave the zoo's cards out")
    p.add_argument("--out", default=None, help="also write the HTML report of the leaderboard to this folder")
    p.set_defaults(handler=cmd_leaderboard)


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "results", nargs="+", help="attack results, an experiment's results.json, or benchmark rows"
    )
    p.add_argument("--out", default="runs/report", help="output folder (default runs/report)")
    p.set_defaults(handler=cmd_report)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment file; start from the demo's: robusthash demo --print")
    p.add_argument("--out", default=None, help="output folder (default runs/<experiment name>)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    p.add_argument("--seed", type=int, default=None, help="override the file's seed")
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="train every model instead of using a model zoo checkpoint of the same recipe",
    )
    _add_run_options(p, seed=False)
    p.set_defaults(handler=cmd_run)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--print", action="store_true", help="print the demo's experiment file (to copy and edit)")
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="train every model instead of using the model zoo's shipped checkpoints",
    )
    _add_run_options(p)
    p.set_defaults(handler=cmd_demo)


# command -> (help, function adding its arguments): a command's arguments (and the imports they need) are built
# only when that command runs, so ``robusthash --help`` does not import torch
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "datasets": ("list the datasets, backbones, losses, attacks and defences", _datasets_arguments),
    "train": ("train a hashing model and save a checkpoint", _train_arguments),
    "evaluate": ("clean retrieval: mAP@K, PR and P@N of the query set", _evaluate_arguments),
    "attack": ("attack the query set and report mAP under each attack", _attack_arguments),
    "defend": ("adversarially train a checkpoint (CgAT, ATRDH, PgA-AT or Gaussian noise)", _defend_arguments),
    "certify": ("certified lower bounds on AP by center smoothing, beside L2 attacks", _certify_arguments),
    "benchmark": ("measure a model under the card protocol and write its model card", _benchmark_arguments),
    "leaderboard": ("rank model cards (the zoo's and yours) by robust mAP", _leaderboard_arguments),
    "report": ("turn results files into an HTML page, Markdown and CSV tables", _report_arguments),
    "run": ("run an experiment file (TOML): train, attack, defend, re-attack, report", _run_arguments),
    "demo": ("the embedded default end to end (the shipped experiment demo.toml)", _demo_arguments),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's arguments are built (the others get their help line)."""
    parser = argparse.ArgumentParser(
        prog="robusthash",
        description="Train, attack, defend and report on deep-hashing image retrieval models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if command is None or command == name:
            arguments(p)
    return parser


def _command_of(argv: Sequence[str]) -> str:
    """The command named in ``argv`` (the first word that is one), or "" when there is none."""
    return next((a for a in argv if a in COMMANDS), "")


def _dataset_given(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset fields given on the command line (``None``: not given, keep what a checkpoint recorded)."""
    from robusthash.runtime import check_seed

    if args.split_seed is not None:
        check_seed(args.split_seed, "--split-seed")
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size must be a positive number of pixels, got {args.image_size}")
    database: Any = args.database
    if database is not None and database != "all":
        try:
            database = int(database)
        except ValueError:
            raise UserError(f"--database must be an integer or 'all', got {database!r}") from None
    return {
        "name": args.dataset,
        "data_dir": args.data_dir,
        "database": database,
        "split_seed": args.split_seed,
        "image_size": args.image_size,
    }


def _model_file(spec: str) -> Path:
    """``--model``: a file, or the name of a zoo model (its shipped file, checked against the manifest)."""
    path = Path(spec)
    if path.exists() or path.suffix:
        return path
    from robusthash.app import zoo

    if spec in {m.name for m in zoo.list_models()}:
        return zoo.checkpoint(spec).path
    return path


def _load_model(args: argparse.Namespace, device: torch.device) -> Any:  # LoadedModel, imported lazily
    """``--model`` [+ ``--model-def`` / ``--backbone``] and its data."""
    from robusthash.loading import ModelSource, load_with_data

    source = ModelSource(
        _model_file(args.model), args.model_def, args.backbone, args.bits, args.model_output, args.model_loss
    )
    return load_with_data(source, device, _dataset_given(args))


def _with_options(name: str, options: type) -> str:
    from dataclasses import fields

    names = [f.name for f in fields(options)]
    return f"{name} ({', '.join(names)})" if names else name


def cmd_datasets(args: argparse.Namespace) -> int:
    from robusthash.attacks import ATTACKS
    from robusthash.data import dataset_spec, list_datasets
    from robusthash.defenses import DEFENSES
    from robusthash.losses import LOSSES
    from robusthash.models import BACKBONES

    for name in list_datasets():
        spec = dataset_spec(name)
        print(f"{name:16s} {spec.description}\n{'':16s} read from: {spec.location()}")
    print("\nbackbones: " + ", ".join(BACKBONES.names()))
    print("losses:    " + ", ".join(LOSSES.names()))
    print("attacks:   " + ", ".join(f"{n} ({ATTACKS.get(n).threat_model})" for n in ATTACKS.names()))
    print(
        "defences:  "
        + ", ".join(_with_options(n, DEFENSES.get(n).Options) for n in DEFENSES.names())
        + "  (--method-options JSON)"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robusthash.config import given
    from robusthash.evaluation import evaluate_retrieval
    from robusthash.runtime import check_writable, resolve_device
    from robusthash.training import TrainConfig, train

    device = resolve_device(args.device)
    config = TrainConfig(**given(args, TrainConfig))
    config.validate()
    check_writable(args.out)
    from robusthash.records import DatasetRef

    options = DatasetRef().with_given(**_dataset_given(args)).options()
    data = DatasetRef.of(options).load()
    result = train(
        data, config, args.out, device, resume=not args.no_resume, dataset_options=options, quiet=args.quiet
    )
    report = evaluate_retrieval(result.model, data, device, topk=1000)
    print(
        f"saved {args.out}: {config.loss} {config.bits} bits on {data.name}, "
        f"clean mAP@1000 = {report['map']:.4f} ({result.seconds:.0f} s of training)"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from robusthash.evaluation import evaluate_retrieval
    from robusthash.results import EvaluationRun, Scores, now
    from robusthash.runtime import check_writable, environment, resolve_device, seed_everything

    device = resolve_device(args.device)
    seed_everything(args.seed)
    if args.topk < 0:
        raise UserError(f"--topk must be >= 0 (0 = the whole database), got {args.topk}")
    out = Path(args.out) if args.out else Path(args.model).with_suffix(".eval.json")
    check_writable(out)
    loaded = _load_model(args, device)
    model, ckpt, data, options = loaded.model, loaded.checkpoint, loaded.data, loaded.dataset.options()
    topk = args.topk or None
    if args.store:
        from robusthash.data import labels_of
        from robusthash.evaluation import encode_split
        from robusthash.store import encode_to_store

        store = encode_to_store(model, data.database, args.store, device, chunk=args.chunk, quiet=args.quiet)
        queries = encode_split(model, data.query, device, quiet=args.quiet, desc="encode queries")
        report = store.report(queries, labels_of(data.query), topk, quiet=args.quiet)
    else:
        report = evaluate_retrieval(model, data, device, topk, quiet=args.quiet, per_query=True)
    run = EvaluationRun(
        config={"model": args.model, "dataset": options, "topk": topk, "store": args.store},
        seed=args.seed,
        environment=environment(device),
        created=now(),
        model=ckpt.summary(),
        clean=Scores.from_report(report),
    )
    run.write(out)
    print(
        f"clean mAP@{report['topk']} = {report['map']:.4f} ({data.name}, {model.bits} bits); results in {out}"
    )
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from robusthash.checkpoint import read_checkpoint
    from robusthash.config import given
    from robusthash.robustness import AttackSuite, evaluate_attacks
    from robusthash.runtime import exclusive_output, resolve_device, seed_everything

    device = resolve_device(args.device)
    suite = AttackSuite(**given(args, AttackSuite))
    suite.validate()
    seed_everything(suite.seed)
    out = Path(args.out) if args.out else Path(args.model).with_name(Path(args.model).stem + "-attacks")
    with exclusive_output(out / "attack_results.json"):
        loaded = _load_model(args, device)
        model, ckpt, data, options = loaded.model, loaded.checkpoint, loaded.data, loaded.dataset.options()
        surrogates = {
            Path(p).stem: read_checkpoint(p).build_model(device)
            for p in (args.surrogate or "").split(",")
            if p.strip()
        }
        run = evaluate_attacks(
            model,
            data,
            suite,
            device,
            quiet=args.quiet,
            surrogates=surrogates,
            config={"model": args.model, "dataset": options},
            model_meta=ckpt.summary(),
            resume=out / CRAFTED,
            label=Path(args.model).stem,
        )
        write_attack_outputs(run, out)
        discard_crafted(out / CRAFTED)
    return 0


CRAFTED = "crafted"  # the folder of an attack run's crafted shards until its results are written


def discard_crafted(folder: Path) -> None:
    """Remove the crafted shards of a finished run (rank 0; the results now hold what they held)."""
    import shutil

    from robusthash.runtime import is_main_process

    if is_main_process():
        shutil.rmtree(folder, ignore_errors=True)


def write_attack_outputs(run: Any, out: Path) -> None:
    """JSON, Markdown table and PR / P@N figures of an attack run, and the table on stdout (rank 0 of a
    distributed job alone)."""
    from robusthash.app.report.plots import plot_pr_and_pn
    from robusthash.app.report.tables import attack_table
    from robusthash.runtime import atomic_write_text, is_main_process

    if not is_main_process():
        return
    run.write(out / "attack_results.json")
    title = f"{run.model_label} model: {run.describe()}"
    table = attack_table(run, title)
    atomic_write_text(table, out / "attack_table.md")
    plot_pr_and_pn(run, f"{run.model_label} model", out)
    print(table)
    print(f"results: {out / 'attack_results.json'} (+ attack_table.md, pr_curve.png, p_at_n.png)")


def cmd_defend(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from robusthash.config import given
    from robusthash.defenses import DefenseConfig, defend
    from robusthash.evaluation import evaluate_retrieval
    from robusthash.results import DefenseRun, Scores, now
    from robusthash.runtime import check_writable, environment, resolve_device

    device = resolve_device(args.device)
    config = DefenseConfig(**given(args, DefenseConfig))
    config.validate()
    if args.out:
        check_writable(args.out)
    loaded = _load_model(args, device)
    model, base, data, options = loaded.model, loaded.checkpoint, loaded.data, loaded.dataset.options()
    if base.record.kind == "defended":
        raise UserError(
            f"{args.model} is already a defended model; start from the clean checkpoint it came from"
        )
    out = (
        Path(args.out)
        if args.out
        else Path(args.model).with_name(f"{Path(args.model).stem}-{config.method}.pt")
    )
    result = defend(base, data, config, out, device, resume=not args.no_resume, quiet=args.quiet, model=model)
    report = evaluate_retrieval(result.model, data, device, topk=1000, per_query=True)
    run = DefenseRun(
        config={"defense": asdict(config), "dataset": options},
        seed=config.seed,
        environment=environment(device),
        created=now(),
        method=config.method,
        checkpoint=str(out),
        base_checkpoint=args.model,
        base_fingerprint=result.base_fingerprint,
        history=result.history,
        seconds=result.seconds,
        clean=Scores.from_report(report),
    )
    run.write(out.with_suffix(".json"))
    print(
        f"saved {out}: {config.method} from {args.model}, clean mAP@1000 = {report['map']:.4f} "
        f"({result.seconds:.0f} s of adversarial training); run record {out.with_suffix('.json')}"
    )
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from robusthash.app.report.tables import certify_table
    from robusthash.certify import CertifySettings, SmoothingConfig, certify_model
    from robusthash.config import given
    from robusthash.results import CertifyRun, now
    from robusthash.runtime import check_writable, environment, resolve_device, seed_everything

    device = resolve_device(args.device)
    smoothing = SmoothingConfig(**given(args, SmoothingConfig))
    settings = CertifySettings(**given(args, CertifySettings))
    smoothing.validate()
    seed_everything(smoothing.seed)
    out = Path(args.out) if args.out else Path(args.model).with_name(Path(args.model).stem + "-certify")
    check_writable(out / "certify_results.json")
    loaded = _load_model(args, device)
    parts = certify_model(
        loaded.model, loaded.data, smoothing, settings, device, args.quiet, Path(args.model).stem
    )
    run = CertifyRun(
        config={
            "model": args.model,
            "dataset": loaded.dataset.options(),
            "smoothing": asdict(smoothing),
            "certify": asdict(settings),
        },
        seed=smoothing.seed,
        environment=environment(device),
        created=now(),
        model=loaded.checkpoint.summary(),
        sigma=smoothing.sigma,
        radii=list(smoothing.radii),
        **parts,
    )
    run.write(out / "certify_results.json")
    print(certify_table(run))
    print(f"results: {out / 'certify_results.json'}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from robusthash import cards
    from robusthash.app.report.leaderboard import card_markdown
    from robusthash.checkpoint import read_checkpoint
    from robusthash.runtime import atomic_write_text, check_writable, resolve_device, seed_everything

    device = resolve_device(args.device)
    protocol = cards.CardProtocol(queries=args.queries, seed=args.seed)
    protocol.validate()
    seed_everything(protocol.seed)
    name = args.name or Path(args.model).stem
    out = Path(args.out) if args.out else Path(args.model).with_name(f"{Path(args.model).stem}-card.json")
    check_writable(out)
    loaded = _load_model(args, device)
    surrogates = {
        Path(p).stem: read_checkpoint(_model_file(p)).build_model(device)
        for p in (args.surrogate or "").split(",")
        if p.strip()
    }
    card = cards.measure_card(
        name, loaded.model, loaded.checkpoint, loaded.data, protocol, device, surrogates, quiet=args.quiet
    )
    card.write(out)
    text = card_markdown(card)
    atomic_write_text(text, out.with_suffix(".md"))
    print(text)
    print(f"card: {out} (+ {out.with_suffix('.md').name})")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from robusthash.app import zoo
    from robusthash.app.report.leaderboard import leaderboard_markdown
    from robusthash.cards import read_card

    paths = ([] if args.no_zoo else zoo.card_paths()) + [Path(p) for p in args.cards]
    if not paths:
        raise UserError(
            "no card to rank: pass card files (robusthash benchmark writes them) or drop --no-zoo"
        )
    print(leaderboard_markdown([read_card(p) for p in paths]))
    if args.out:
        from robusthash.app.report.build import build_report
        from robusthash.runtime import check_writable

        check_writable(args.out, folder=True)
        print(f"report: {build_report(paths, args.out)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robusthash.app.report.build import build_report
    from robusthash.runtime import check_writable

    check_writable(args.out, folder=True)
    index = build_report(args.results, args.out)
    print(f"report: {index} (+ report.md, CSV tables, figures/)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from robusthash.app.experiment import load_experiment, run_experiment

    out = args.out or f"runs/{load_experiment(args.experiment, args.seed, args.data_dir).name}"
    run_experiment(
        args.experiment,
        out,
        args.seed,
        args.device,
        args.quiet,
        args.data_dir,
        args.from_scratch,
        args.threads,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from robusthash.app.experiment import DEMO, run_experiment

    if args.print:
        print(DEMO.read_text(encoding="utf-8"), end="")
        return 0
    run_experiment(
        DEMO, args.out, args.seed, args.device, args.quiet, args.data_dir, args.from_scratch, args.threads
    )
    return 0


class _NothingToDo(Exception):
    """A rank other than 0 of a torchrun job, for a command that one process runs."""


@contextlib.contextmanager
def _launched(args: argparse.Namespace) -> Iterator[None]:
    """Under ``torchrun``: join the process group and put this rank on its device (``--device`` then names the
    kind, cpu or cuda); ranks other than 0 run quietly and print nothing (rank 0 reports and writes)."""
    from robusthash.distributed import launched_by_torchrun, process_group, world

    if not launched_by_torchrun():
        yield
        return
    if not hasattr(args, "device"):  # report, datasets: nothing to share out; rank 0 alone runs them
        if os.environ.get("RANK", "0") == "0":
            yield
        else:
            raise _NothingToDo
        return
    with process_group(args.device) as device:
        args.device = str(device)
        if world().is_main:
            yield
            return
        args.quiet = True
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    handler: Handler = args.handler
    try:
        from robusthash.runtime import cudnn_autotuning, threads_set

        # run and demo: the experiment file may name its own threads
        own = hasattr(args, "threads") and args.command not in ("run", "demo")
        with (
            warnings.catch_warnings(),
            _launched(args),
            cudnn_autotuning(getattr(args, "cudnn_benchmark", False)),
            threads_set(args.threads) if own else contextlib.nullcontext(),
        ):
            warnings.simplefilter("default")
            return handler(args)
    except _NothingToDo:
        return 0
    except UserError as exc:
        print(f"robusthash: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "robusthash: interrupted (what was written so far is complete: train, defend, attack, run and demo "
            "resume when rerun with the same arguments)",
            file=sys.stderr,
        )
        return 130
    except json.JSONDecodeError as exc:
        print(f"robusthash: error: a results file is not valid JSON: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
