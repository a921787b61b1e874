"""``robusthash run FILE.toml``: a whole experiment, stage by stage, with resume.

Stages: train the model of ``[train]`` (or reuse ``[model] checkpoint``); attack it with the suite of
``[attack]``; adversarially train it with each method of ``[defend] methods``; attack every defended model; write
``results.json`` (an :class:`~robusthash.results.ExperimentRun`), ``defense_table.md`` and the report. Each stage
reuses what an earlier run left in the output folder (checkpoints resume; a robustness file is reused when its
config is this run's; an attack stage resumes from the shards it had crafted, ``attacks-*.crafted/``), so an
interrupted experiment picks up where it stopped. A stage whose recipe is exactly
that of a model in the zoo (:mod:`robusthash.app.zoo`, the demo's models) uses the shipped checkpoint instead of
training, unless ``from_scratch``. The resolved configuration (every
default filled in) is written to ``config.json`` beside the results. ``robusthash demo`` runs the shipped
``experiments/demo.toml``.
"""

from __future__ import annotations

import shutil
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from robusthash.app import zoo
from robusthash.app.report.build import build_report
from robusthash.app.report.tables import attack_table, markdown_table
from robusthash.cards import CardProtocol, file_sha256, measure_card, read_card
from robusthash.certify import CertifySettings, SmoothingConfig, certify_model
from robusthash.checkpoint import read_checkpoint
from robusthash.config import from_mapping
from robusthash.data import DatasetSplits
from robusthash.defenses import DEFENSES, DefenseConfig, defend
from robusthash.distributed import barrier
from robusthash.errors import UserError
from robusthash.records import DatasetRef
from robusthash.results import CertifyRun, ExperimentRow, ExperimentRun, RobustnessRun, load_results, now
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.runtime import (
    atomic_write_json,
    atomic_write_text,
    check_seed,
    check_writable,
    environment,
    exclusive_output,
    is_main_process,
    resolve_device,
    seed_everything,
    threads_set,
)
from robusthash.training import TrainConfig, train

DEMO = Path(__file__).parent / "experiments" / "demo.toml"


@dataclass
class Experiment:
    """A parsed experiment file, every default resolved."""

    name: str
    seed: int
    dataset: dict[str, Any]
    train: TrainConfig
    attack: AttackSuite
    defend: DefenseConfig
    methods: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    threads: int | str = "auto"
    certify: SmoothingConfig | None = None  # a [certify] table: center smoothing of every model
    certify_settings: CertifySettings | None = None
    card: CardProtocol | None = None  # a [card] table: a model card of every model

    def resolved(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "threads": self.threads,
            "dataset": self.dataset,
            "train": asdict(self.train),
            "attack": asdict(self.attack),
            "defend": {**asdict(self.defend), "methods": self.methods},
            "model": {"checkpoint": self.checkpoint},
            "certify": None
            if self.certify is None
            else {**asdict(self.certify), **asdict(self.certify_settings or CertifySettings())},
            "card": None if self.card is None else self.card.record(),
        }


@dataclass
class ModelTable:
    """An experiment file's ``[model]`` table: a trained checkpoint to attack and defend instead of training."""

    checkpoint: str | None = None


@dataclass
class DefendTable:
    """The part of an experiment file's ``[defend]`` table that is not a :class:`DefenseConfig` field."""

    methods: list[str] = field(default_factory=list)


@dataclass
class CardTable:
    """An experiment file's ``[card]`` table: the card protocol's settings a user may change (another value is
    another protocol: such cards rank on their own board)."""

    queries: int = CardProtocol.queries
    seed: int = CardProtocol.seed


@dataclass
class ExperimentFile:
    """An experiment file's top level: its scalars and which tables it has (each table typed on its own)."""

    name: str | None = None
    seed: int = 0
    threads: int | str = "auto"
    dataset: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] = field(default_factory=dict)
    defend: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    certify: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] | None = None


def load_experiment(path: str | Path, seed: int | None = None, data_dir: str | None = None) -> Experiment:
    """Read an experiment file; ``seed`` and ``data_dir`` (from the command line) override the file's.

    Every table and value is typed (:func:`~robusthash.config.typed_values`) and range-checked before any work;
    an error names the table and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"experiment file {path} not found")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a valid TOML experiment file: {exc}") from None
    top = from_mapping(ExperimentFile, doc, str(path))
    if top.threads != "auto" and not (isinstance(top.threads, int) and top.threads >= 1):
        raise UserError(f"{path} threads: expected a positive integer or 'auto', got {top.threads!r}")
    seed = top.seed if seed is None else seed
    try:
        check_seed(seed)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    dataset = from_mapping(DatasetRef, top.dataset, f"{path} [dataset]")
    if data_dir is not None:
        dataset = replace(dataset, data_dir=data_dir)
    dataset.validate(f"{path} [dataset]")
    defend_table = dict(top.defend)
    extra = from_mapping(DefendTable, {"methods": defend_table.pop("methods", [])}, f"{path} [defend]")
    for method in extra.methods:
        try:
            DEFENSES.get(method)
        except UserError as exc:
            raise UserError(f"{path} [defend] methods: {exc}") from None
    model = from_mapping(ModelTable, top.model, f"{path} [model]")
    experiment = Experiment(
        name=top.name or path.stem,
        seed=seed,
        dataset=dataset.options(),
        train=from_mapping(TrainConfig, {**top.train, "seed": seed}, f"{path} [train]"),
        attack=from_mapping(AttackSuite, {**top.attack, "seed": seed}, f"{path} [attack]"),
        defend=from_mapping(DefenseConfig, {**defend_table, "seed": seed}, f"{path} [defend]"),
        methods=extra.methods,
        checkpoint=model.checkpoint,
        threads=top.threads,
    )
    if top.certify:
        own = {f.name for f in fields(CertifySettings)}
        settings = {k: v for k, v in top.certify.items() if k in own}
        smoothing = {k: v for k, v in top.certify.items() if k not in own}
        experiment.certify = from_mapping(SmoothingConfig, {**smoothing, "seed": seed}, f"{path} [certify]")
        experiment.certify_settings = from_mapping(CertifySettings, settings, f"{path} [certify]")
        try:
            experiment.certify.validate()
        except UserError as exc:
            raise UserError(f"{path} [certify]: {exc}") from None
    if top.card is not None:
        card = from_mapping(CardTable, top.card, f"{path} [card]")
        experiment.card = CardProtocol(queries=card.queries, seed=card.seed)
        try:
            check_seed(card.seed)
            experiment.card.validate()
        except UserError as exc:
            raise UserError(f"{path} [card]: {exc}") from None
    for table, config in (("train", experiment.train), ("attack", experiment.attack)):
        try:
            config.validate()
        except UserError as exc:
            raise UserError(f"{path} [{table}]: {exc}") from None
    for method in extra.methods:
        try:
            DefenseConfig(**{**asdict(experiment.defend), "method": method}).validate()
        except UserError as exc:
            raise UserError(f"{path} [defend]: {exc}") from None
    return experiment


def _attack_stage(
    model_path: Path, data: DatasetSplits, exp: Experiment, device: torch.device, out: Path, quiet: bool
) -> RobustnessRun:
    """The robustness run of one model, reused from ``out`` when an earlier run finished it with this config."""
    config = {"model": str(model_path), "dataset": exp.dataset}
    if out.exists():
        try:
            doc = load_results(out)
        except UserError:
            doc = None  # unreadable leftovers are recomputed
        if isinstance(doc, RobustnessRun) and doc.config == {"suite": asdict(exp.attack), **config}:
            return doc
    ckpt = read_checkpoint(model_path)
    crafted = out.with_suffix(".crafted")  # the shards crafted so far: an interrupted stage resumes from them
    run = evaluate_attacks(
        ckpt.build_model(device),
        data,
        exp.attack,
        device,
        quiet=quiet,
        config=config,
        model_meta=ckpt.summary(),
        resume=crafted,
        label=model_path.stem,
    )
    run.write(out)
    if is_main_process():
        shutil.rmtree(crafted, ignore_errors=True)
    return run


def experiment_table(runs: dict[str, RobustnessRun]) -> str:
    """CgAT's table layout: rows = models, columns = clean, each attack, and the worst-case robust mAP."""
    first = next(iter(runs.values()))
    header = ["model", "Clean"] + [a.display_name for a in first.attacks] + ["robust"]
    rows = [[r.model_label, r.clean.map] + [a.map for a in r.attacks] + [r.robust_map] for r in runs.values()]
    return markdown_table(header, rows)


def run_experiment(
    path: str | Path,
    out: str | Path,
    seed: int | None = None,
    device_name: str = "auto",
    quiet: bool = False,
    data_dir: str | None = None,
    from_scratch: bool = False,
    threads: int | str | None = None,
) -> ExperimentRun:
    """Run every stage of the experiment file ``path`` into folder ``out`` (see module docstring); the folder
    is locked for the run, so a second run into it is refused. ``threads`` (the command line's) overrides the
    file's."""
    exp = load_experiment(path, seed, data_dir)
    device = resolve_device(device_name)
    check_writable(out, folder=True)
    with (
        exclusive_output(Path(out) / "results.json"),
        threads_set(exp.threads if threads is None else threads),
    ):
        return _run(exp, Path(out), device, quiet, from_scratch)


def _shipped(
    path: Path, exp: Experiment, from_scratch: bool, defense: DefenseConfig | None = None
) -> str | None:
    """Put the zoo's model of this stage at ``path`` (its name), or, ``from_scratch``, remove a zoo copy an
    earlier run left there so that the stage trains."""
    if from_scratch:
        if zoo.is_shipped_copy(path):
            path.unlink()
        return None
    entry = zoo.provide(path, exp.train, exp.dataset, defense)
    barrier()  # rank 0 copies the file; every rank then reads it
    return None if entry is None else entry.name


def _certify_stage(
    exp: Experiment,
    paths: dict[str, Path],
    data: DatasetSplits,
    out: Path,
    device: torch.device,
    quiet: bool,
    stages: int,
) -> list[str]:
    """Certify every model of the experiment (``certify-<model>.json``, reused when an earlier run finished it
    with this config); returns the file names."""
    assert exp.certify is not None and exp.certify_settings is not None
    print(f"[{stages - 1}/{stages}] certifying every model by center smoothing (sigma {exp.certify.sigma:g})")
    config = {
        "smoothing": asdict(exp.certify),
        "certify": asdict(exp.certify_settings),
        "dataset": exp.dataset,
    }
    names = []
    for key, model_path in paths.items():
        target = out / f"certify-{key}.json"
        names.append(target.name)
        if target.exists():
            try:
                done = load_results(target)
            except UserError:
                done = None
            if isinstance(done, CertifyRun) and done.config == {**config, "model": str(model_path)}:
                continue
        ckpt = read_checkpoint(model_path)
        parts = certify_model(
            ckpt.build_model(device), data, exp.certify, exp.certify_settings, device, quiet, model_path.stem
        )
        run = CertifyRun(
            config={**config, "model": str(model_path)},
            seed=exp.seed,
            environment=environment(device),
            created=now(),
            model=ckpt.summary(),
            sigma=exp.certify.sigma,
            radii=list(exp.certify.radii),
            **parts,
        )
        if is_main_process():
            run.write(target)
        print(
            f"      {run.model_label}: certified mAP "
            + ", ".join(f"{c:.4f} at L2 {r:g}" for c, r in zip(run.certified_map, run.radii, strict=True)),
            flush=True,
        )
    return names


def _card_stage(
    exp: Experiment,
    paths: dict[str, Path],
    data: DatasetSplits,
    out: Path,
    device: torch.device,
    quiet: bool,
    stage: str,
) -> list[str]:
    """A model card of every model (``card-<model>.json`` and ``.md``; a card of this checkpoint under this
    protocol from an earlier run is kept); a defended model's transfer attacks are crafted on the undefended one.
    Returns the file names."""
    from robusthash.app.report.leaderboard import card_markdown

    assert exp.card is not None
    print(
        f"{stage} model cards of every model (protocol {exp.card.record()['name']}, {exp.card.queries} queries)"
    )
    base = read_checkpoint(paths["none"]).build_model(device)
    names = []
    for key, model_path in paths.items():
        target = out / f"card-{key}.json"
        names.append(target.name)
        if target.exists():
            try:
                done = read_card(target)
            except UserError:
                done = None
            if (
                done
                and done.protocol == exp.card.record()
                and done.checkpoint_sha256 == file_sha256(model_path)
            ):
                continue
        ckpt = read_checkpoint(model_path)
        surrogates = {} if key == "none" else {"undefended": base}
        card = measure_card(
            f"{exp.name}-{key}",
            ckpt.build_model(device),
            ckpt,
            data,
            exp.card,
            device,
            surrogates,
            quiet=quiet,
        )
        if is_main_process():
            card.write(target)
            atomic_write_text(card_markdown(card), target.with_suffix(".md"))
        print(
            f"      {card.model_label}: clean {card.clean_map:.4f}, robust {card.robust_map:.4f}", flush=True
        )
    return names


def _run(exp: Experiment, out: Path, device: torch.device, quiet: bool, from_scratch: bool) -> ExperimentRun:
    began = time.perf_counter()
    seed_everything(exp.seed)
    atomic_write_json(exp.resolved(), out / "config.json")
    data = DatasetRef.of(exp.dataset).load()
    stages = 3 + 2 * bool(exp.methods) + bool(exp.certify) + bool(exp.card)
    if exp.checkpoint:
        model_path = Path(exp.checkpoint)
        print(f"[1/{stages}] using the trained model {model_path}")
    else:
        model_path = out / "model.pt"
        c = exp.train
        shipped = _shipped(model_path, exp, from_scratch)
        if shipped:
            print(
                f"[1/{stages}] using the model zoo's {shipped} ({c.loss} / {c.backbone} / {c.bits} bits, this "
                f"recipe; --from-scratch retrains it) -> {model_path}"
            )
        else:
            print(
                f"[1/{stages}] training {c.loss} / {c.backbone} / {c.bits} bits on {data.name} -> {model_path}"
            )
        train(data, exp.train, model_path, device, dataset_options=exp.dataset, quiet=quiet)
    suite = exp.attack
    print(
        f"[2/{stages}] attacking the undefended model ({', '.join(suite.attacks)}; protocol {suite.protocol})"
    )
    runs = {"none": _attack_stage(model_path, data, exp, device, out / "attacks-none.json", quiet)}
    print(attack_table(runs["none"], "undefended model"))
    paths = {"none": model_path}
    if exp.methods:
        print(
            f"[3/{stages}] adversarial training: {', '.join(exp.methods)} ({exp.defend.epochs} epochs each)"
        )
        base = read_checkpoint(model_path)
        for method in exp.methods:
            paths[method] = out / f"model-{method}.pt"
            config = DefenseConfig(**{**asdict(exp.defend), "method": method})
            if not exp.checkpoint and (name := _shipped(paths[method], exp, from_scratch, config)):
                print(f"      {method}: the model zoo's {name}")
            defend(base, data, config, paths[method], device, quiet=quiet)
        print(f"[4/{stages}] attacking the defended models")
        for method in exp.methods:
            print(f"      {DEFENSES.get(method).display_name}: {', '.join(suite.attacks)}", flush=True)
            runs[method] = _attack_stage(
                paths[method], data, exp, device, out / f"attacks-{method}.json", quiet
            )
            print(
                f"      {DEFENSES.get(method).display_name}: robust mAP {runs[method].robust_map:.4f}",
                flush=True,
            )
    card_stage = f"[{stages - 1 - bool(exp.certify)}/{stages}]"
    cards = _card_stage(exp, paths, data, out, device, quiet, card_stage) if exp.card else []
    certified = _certify_stage(exp, paths, data, out, device, quiet, stages) if exp.certify else []
    table = experiment_table(runs)
    result = ExperimentRun(
        config=exp.resolved(),
        seed=exp.seed,
        environment=environment(device),
        created=now(),
        name=exp.name,
        rows=[ExperimentRow(runs[k].model_label, f"attacks-{k}.json", str(paths[k])) for k in runs],
        seconds=time.perf_counter() - began,
        certified=certified,
        cards=cards,
    )
    result.write(out / "results.json")
    atomic_write_text(table, out / "defense_table.md")
    k = suite.topk or "all"
    print(
        f"\nmAP@{k} on {data.name} ({exp.train.loss}, {exp.train.bits} bits), protocol {suite.protocol}, "
        f"eps {suite.eps * 255:.0f}/255:\n\n{table}"
    )
    print(f"[{stages}/{stages}] writing the report (tables, PR and P@N curves, retrieval gallery)")
    index = build_report([out / "results.json"], out / "report") if is_main_process() else None
    print(
        f"results in {out}/ (results.json, attacks-*.json, defense_table.md, config.json); report: {index}; "
        f"{time.perf_counter() - began:.0f} s in all"
    )
    return result
