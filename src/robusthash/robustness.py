"""Robustness evaluation in two steps: **craft** adversarial queries, then **score** them.

:func:`craft` runs one attack on a set of queries (named by their indices in the query split) and returns a
:class:`Crafted`: the victim's codes of the adversarial queries, the targets, per-query norms and the timings.
Crafted sets of disjoint query shards :func:`merge` into the set of their union, exactly as if crafted
together (every random draw of query i comes from ``(seed, i)``). :func:`score` turns a crafted set into an
:class:`~robusthash.results.AttackOutcome`: mAP@K against the true labels (per-query AP), t-mAP against the
targets for targeted attacks, bits flipped against the clean code, L-inf and L2 of the perturbation.
:func:`evaluate_attacks` does both for a whole :class:`AttackSuite` and adds the **robust mAP**, the mean over
queries of the lowest AP any attack reached (a worst-case ensemble, like AutoAttack's), and a retrieval gallery.

Under ``torchrun`` (:mod:`robusthash.distributed`) each rank encodes a strided share of the database and the
reference set and crafts a strided share of the queries; the shards are gathered and merged, scored once on
rank 0 and the run is broadcast, so every rank returns the single-process result (per-query randomness).

White-box attacks craft on the victim. Transfer attacks (``threat_model = "transfer"``) craft on each surrogate
model (with the surrogate's own code banks) and only the victim's codes of the result are scored; the victim is
never differentiated. Timing is wall clock; it excludes encoding the database and the reference set, which every
attack shares (``setup_seconds``); an attack's :meth:`~robusthash.attacks.Attack.fit` is timed apart.

Resume: given a ``resume`` folder, each attack crafts its queries in shards of its own ``batch_size`` (the batches
it crafts anyway, so the result equals one uninterrupted call) and writes each shard's :class:`Crafted` there as it
finishes (atomically; read back with ``weights_only=True``). A rerun loads every shard whose key (the model's
weights, the attack's settings, the run's config and the shard's query indices) matches and crafts only the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robusthash import metrics
from robusthash.attacks import (
    ATTACKS,
    PROTOCOLS,
    Attack,
    CodeBank,
    IterativeAttack,
    QueryAttack,
    create_attack,
)
from robusthash.attacks.cascade import RobustCascade
from robusthash.config import option
from robusthash.data import DatasetSplits, iterate_batches, labels_of
from robusthash.distributed import all_gather_objects, broadcast_object, gather_strided, strided, world
from robusthash.errors import UserError
from robusthash.evaluation import check_model, encode_images, encode_split, probe_images
from robusthash.masking import run_checks
from robusthash.results import AttackOutcome, Gallery, GalleryItem, RobustnessRun, Scores, now
from robusthash.runtime import (
    atomic_torch_save,
    check_precision,
    check_seed,
    environment,
    eval_mode,
    model_fingerprint,
    safe_load,
    speed_up,
)

DEFAULT_ATTACKS = ("pga", "hag", "sdha", "p2p", "dhta")


def protocol_options(name: str, protocol: str, steps: int | None = None) -> dict[str, Any]:
    """Constructor options of attack ``name`` under a protocol (the attack's own
    :meth:`~robusthash.attacks.Attack.protocol_options`); ``steps`` overrides the iteration count of iterative
    attacks."""
    cls = ATTACKS.get(name)
    options = dict(cls.protocol_options(protocol))
    if steps is not None and issubclass(cls, IterativeAttack):
        options["steps"] = steps
    return options


@dataclass
class AttackSuite:
    """What to run: attacks, protocol and the shared settings."""

    attacks: list[str] = option(None, "attacks to run, comma-separated")  # replaced in __post_init__
    protocol: str = option(
        "default",
        "default: each attack's published settings; pgd20: all PGD, 20 steps; "
        "robust: the worst-case cascade (attack cascade) first, then the attacks given",
    )
    steps: int | None = option(None, "override every attack's iteration count")
    eps: float = option(8 / 255, "L-inf budget, in pixel levels of 255 on the command line", cli_scale=255)
    topk: int | None = option(1000, "mAP cut-off; none = the whole database")
    queries: int | None = option(None, "attack this many queries (a seeded subset)")
    batch_size: int = option(128, "images per attack batch (results do not depend on it)")
    seed: int = option(0, "seed of every random draw (per query)")
    attack_options: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "per-attack options, JSON"}
    )
    gallery_queries: int = option(3, "queries drawn in the retrieval gallery (0: none)")
    precision: str = option(
        "fp32", "fp32, or bf16: autocast of the attacks and the encoding (logits stay fp32)"
    )
    channels_last: bool = option(
        True,
        "channels-last (NHWC) weights for the convolutions (faster: docs/"
        "choices.md; changes mAP by float reordering only)",
    )
    compile: bool = option(False, "torch.compile the model's forward (compiles once; for long attacks)")
    allow_saturated: bool = option(
        False, "attack a model whose every logit saturates tanh (refused otherwise)"
    )

    def __post_init__(self) -> None:
        if self.protocol == "robust":  # the cascade always runs under it, first; other attacks are optional
            self.attacks = ["cascade"] + [a for a in (self.attacks or []) if a != "cascade"]
        elif self.attacks is None:
            self.attacks = list(DEFAULT_ATTACKS)

    def validate(self) -> None:
        check_seed(self.seed)
        if not self.attacks:
            raise UserError("no attack given; valid: " + ", ".join(ATTACKS.names()))
        for name in self.attacks:
            ATTACKS.get(name)
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        unknown = sorted(set(self.attack_options) - set(self.attacks))
        if unknown:
            raise UserError(f"attack options given for {', '.join(unknown)}, which the suite does not run")
        if self.queries is not None and self.queries < 1:
            raise UserError(f"queries must be >= 1, got {self.queries}")
        if self.topk is not None and self.topk < 1:
            raise UserError(f"topk must be >= 1 (or none for the whole database), got {self.topk}")
        if self.steps is not None and self.steps < 0:
            raise UserError(f"steps must be >= 0, got {self.steps}")
        if not (isinstance(self.eps, (int, float)) and 0 <= self.eps <= 1):
            raise UserError(f"eps must lie in [0, 1] image units (0-255 pixel levels), got {self.eps}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.gallery_queries < 0:
            raise UserError(f"gallery_queries must be >= 0, got {self.gallery_queries}")
        check_precision(self.precision)

    def options(self, name: str) -> dict[str, Any]:
        """The constructor options of attack ``name`` in this suite."""
        scored = {"topk": self.topk} if ATTACKS.get(name).scores_itself else {}
        return {
            **protocol_options(name, self.protocol, self.steps),
            **scored,
            **self.attack_options.get(name, {}),
            "eps": self.eps,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "precision": self.precision,
        }


def query_subset(data: DatasetSplits, count: int | None, seed: int) -> Tensor:
    """Indices of the queries to attack: all of them, or ``count`` drawn with ``seed`` (sorted)."""
    n = len(data.query)
    if count is None or count >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:count].sort().values


def check_indices(indices: Tensor | Sequence[int], count: int) -> Tensor:
    """Query indices as a 1-D long tensor; :class:`UserError` unless they are distinct integers in [0, count)."""
    indices = torch.as_tensor(indices)
    if indices.ndim != 1 or (len(indices) and (indices.is_floating_point() or indices.dtype == torch.bool)):
        raise UserError(
            f"query indices must be a 1-D list of integers, got {indices.dtype} {tuple(indices.shape)}"
        )
    indices = indices.long()
    if len(indices) and (indices.min() < 0 or indices.max() >= count):
        raise UserError(
            f"query indices must lie in [0, {count}) (the query split), got {int(indices.min())} to "
            f"{int(indices.max())}"
        )
    if len(torch.unique(indices)) != len(indices):
        raise UserError("query indices must be distinct: each query is attacked once")
    return indices


def query_images(data: DatasetSplits, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Images and labels of the queries ``indices``."""
    xs, ys = [], []
    for x, y, _ in iterate_batches(data.query, 500, indices=indices):
        xs.append(x)
        ys.append(y)
    if not xs:
        return torch.zeros(0, *data.image_shape), torch.zeros(0, data.num_classes)
    return torch.cat(xs), torch.cat(ys)


@dataclass
class Banks:
    """A model's code banks: the reference (encoded training set) and the database."""

    reference: CodeBank
    database: CodeBank

    @classmethod
    def of(
        cls,
        model: nn.Module,
        data: DatasetSplits,
        device: torch.device,
        quiet: bool = True,
        precision: str = "fp32",
    ) -> Banks:
        """Encode both splits; under torchrun each rank encodes a strided share and the codes are gathered."""

        def bank(split: Any, desc: str) -> CodeBank:
            return CodeBank(
                encode_split(model, split, device, quiet, desc, precision), labels_of(split).clone()
            )

        return cls(bank(data.train, "encode reference"), bank(data.database, "encode database"))


@dataclass
class Crafted:
    """One attack's adversarial queries, as the victim sees them. Rows follow ``indices``; ``kept`` holds the
    adversarial images of the queries a caller asked to keep (by query index), ``wall_seconds`` the wall clock
    of a sharded crafting (``seconds`` sums the shards' times)."""

    name: str
    settings: dict[str, Any]
    threat_model: str
    targeted: bool
    indices: Tensor
    codes: Tensor
    linf: Tensor
    l2: Tensor
    targets: Tensor | None
    seconds: float
    fit_seconds: float = 0.0
    surrogate: str | None = None
    kept: dict[int, Tensor] = field(default_factory=dict, repr=False)
    wall_seconds: float | None = None
    queries_used: Tensor | None = None  # query attacks: oracle images sent per query
    budget_codes: dict[int, Tensor] | None = None  # query attacks: budget -> codes of the best image by then
    stages: Tensor | None = None  # the robust cascade: (queries, stages) AP after each stage (nan: skipped)


def warm_up(model: nn.Module, images: Tensor, device: torch.device) -> None:
    """One forward and backward pass on a few queries before any attack is timed, so that the first attack is
    not charged for one-off costs (allocator growth, autograd and kernel set-up) that the others then skip."""
    if len(images) == 0:
        return
    with eval_mode(model), torch.enable_grad():
        x = images.to(device).requires_grad_(True)
        torch.autograd.grad(model(x).sum(), x)  # the input's gradient only: no parameter's .grad is touched
    _sync(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def craft(
    attack: Attack,
    victim: nn.Module,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    device: torch.device,
    keep: Tensor | None = None,
    surrogate: str | None = None,
) -> Crafted:
    """Run ``attack`` on the queries ``indices`` and encode the result with ``victim`` (timed: target choice and
    crafting); the adversarial images of the queries in ``keep`` are kept. ``attack`` must be fitted already
    (its :meth:`fit` time is the caller's to record)."""
    _sync(device)
    began = time.perf_counter()
    targets = attack.choose_targets(labels, indices) if attack.targeted else None
    adversarial = attack(images, labels, targets, indices=indices)
    _sync(device)
    seconds = time.perf_counter() - began
    delta = (adversarial - images).flatten(1)
    linf = delta.abs().amax(1) if delta.shape[1] else torch.zeros(len(indices))
    crafted = Crafted(
        attack.name,
        attack.describe(),
        attack.threat_model,
        attack.targeted,
        indices.clone(),
        encode_images(victim, adversarial, device, precision=attack.precision),
        linf,
        delta.norm(dim=1),
        targets,
        seconds,
        surrogate=surrogate,
        kept=_kept(adversarial, indices, keep),
    )
    order = indices.tolist()
    if isinstance(attack, RobustCascade):
        crafted.stages = torch.tensor([attack.stage_ap[i] for i in order], dtype=torch.float64).view(
            len(order), -1
        )
    if isinstance(attack, QueryAttack):
        crafted.queries_used = torch.tensor([attack.queries_used[i] for i in order], dtype=torch.long)
        crafted.budget_codes = {
            b: torch.stack([codes[i] for i in order]) if order else torch.zeros(0)
            for b, codes in sorted(attack.budget_codes.items())
        }
    return crafted


def shard_key(attack: Attack, model: str, config: dict[str, Any], indices: Tensor, label: str | None) -> str:
    """What a crafted shard depends on, hashed: the victim's weights (``model``, a fingerprint), the attack's
    settings and surrogate, the run's config and the shard's queries."""
    text = json.dumps(
        [model, attack.describe(), label, config, indices.tolist()], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _load_shard(path: Path, key: str) -> Crafted | None:
    """The shard saved at ``path`` under ``key``, or None (missing, damaged, or of another key: recrafted)."""
    if not path.is_file():
        return None
    try:
        payload = safe_load(path, "crafted shard")
        return Crafted(**payload["crafted"]) if payload.get("key") == key else None
    except (UserError, KeyError, TypeError):  # an unreadable leftover is crafted again, never trusted
        return None


def craft_resumable(
    attack: Attack,
    victim: nn.Module,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    device: torch.device,
    folder: Path,
    fingerprint: str,
    config: dict[str, Any],
    keep: Tensor | None = None,
    surrogate: str | None = None,
) -> Crafted:
    """:func:`craft` in shards of ``attack.batch_size`` queries, each saved in ``folder`` as it finishes and
    loaded instead of crafted when a rerun finds it (see module docstring); the shards :func:`merge`."""
    if not len(indices):
        return craft(attack, victim, images, labels, indices, device, keep, surrogate)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, len(indices), attack.batch_size):
        sl = slice(start, start + attack.batch_size)
        key = shard_key(attack, fingerprint, config, indices[sl], surrogate)
        path = folder / f"{attack.name}-{key}.pt"
        crafted = _load_shard(path, key)
        if crafted is None:
            crafted = craft(attack, victim, images[sl], labels[sl], indices[sl], device, keep, surrogate)
            atomic_torch_save(
                {"key": key, "crafted": {f.name: getattr(crafted, f.name) for f in fields(crafted)}}, path
            )
        shards.append(crafted)
    merged = merge(shards)
    merged.wall_seconds = merged.seconds  # one process crafted the shards one after another
    return merged


def _kept(adversarial: Tensor, indices: Tensor, keep: Tensor | None) -> dict[int, Tensor]:
    if keep is None:
        return {}
    wanted = set(keep.tolist())
    return {int(i): adversarial[row].cpu() for row, i in enumerate(indices.tolist()) if i in wanted}


def merge(shards: list[Crafted]) -> Crafted:
    """The crafted set of the union of disjoint query shards (rows sorted by query index; times summed, and
    the longest shard's time as ``wall_seconds`` when the shards carry none)."""
    if not shards:
        raise ValueError("nothing to merge")
    first = shards[0]
    indices = torch.cat([s.indices for s in shards])
    if len(torch.unique(indices)) != len(indices):
        raise ValueError("query shards overlap: a query was crafted twice")
    order = torch.argsort(indices)

    def cat(name: str) -> Tensor | None:
        parts = [getattr(s, name) for s in shards]
        return None if parts[0] is None else torch.cat(parts)[order]

    walls = [s.wall_seconds if s.wall_seconds is not None else s.seconds for s in shards]
    kept = {k: v for s in shards for k, v in s.kept.items()}
    budget_codes = None
    if first.budget_codes is not None:
        budget_codes = {
            b: torch.cat(
                [s.budget_codes[b] for s in shards if s.budget_codes and len(s.indices)] or [torch.zeros(0)]
            )[order]
            for b in first.budget_codes
        }
    return Crafted(
        first.name,
        first.settings,
        first.threat_model,
        first.targeted,
        indices[order],
        cat("codes"),
        cat("linf"),
        cat("l2"),
        cat("targets"),
        sum(s.seconds for s in shards),
        max(s.fit_seconds for s in shards),
        first.surrogate,
        kept,
        max(walls),
        cat("queries_used"),
        budget_codes,
        cat("stages"),
    )


def score(
    crafted: Crafted, clean_codes: Tensor, labels: Tensor, database: CodeBank, topk: int | None
) -> AttackOutcome:
    """Per-query AP (and t-AP for targeted attacks), bits flipped and norms of a crafted set.

    ``clean_codes`` and ``labels`` are the victim's clean codes and the true labels of the same queries, in the
    same order as ``crafted.indices``.
    """
    scores = Scores.from_report(
        metrics.retrieval_report(crafted.codes, database.codes, labels, database.labels, topk)
    )
    tap = None
    tmap = None
    success = None
    if crafted.targets is not None:
        tap = metrics.average_precision(crafted.codes, database.codes, crafted.targets, database.labels, topk)
        tap = [float(v) for v in np.asarray(tap)]
        tmap = float(np.mean(tap)) if tap else 0.0
        success = metrics.targeted_success(
            crafted.codes, database.codes, crafted.targets, database.labels
        ).tolist()
    budget_map = None
    if crafted.budget_codes is not None:
        budget_map = {
            str(b): float(
                metrics.mean_average_precision(codes, database.codes, labels, database.labels, topk)
            )
            if len(codes)
            else 0.0
            for b, codes in crafted.budget_codes.items()
        }
    display = ATTACKS.get(crafted.name).display_name if crafted.name in ATTACKS else crafted.name
    name = crafted.name if crafted.surrogate is None else f"{crafted.name}@{crafted.surrogate}"
    return AttackOutcome(
        name=name,
        display_name=display if crafted.surrogate is None else f"{display} ({crafted.surrogate})",
        settings=crafted.settings,
        threat_model=crafted.threat_model,
        targeted=crafted.targeted,
        scores=scores,
        seconds=crafted.seconds,
        fit_seconds=crafted.fit_seconds,
        wall_seconds=crafted.wall_seconds,
        bits_flipped=(crafted.codes != clean_codes).float().sum(1).tolist(),
        linf=crafted.linf.tolist(),
        l2=crafted.l2.tolist(),
        tmap=tmap,
        tap=tap,
        surrogate=crafted.surrogate,
        success=success,
        queries_used=None if crafted.queries_used is None else crafted.queries_used.tolist(),
        budget_map=budget_map,
        stages=None
        if crafted.stages is None
        else {
            spec: [None if math.isnan(v) else v for v in crafted.stages[:, k].tolist()]
            for k, spec in enumerate(crafted.settings["stages"])
        },
    )


def build_gallery(
    name: str,
    images: Tensor,
    adversarial: Tensor,
    labels: Tensor,
    indices: Tensor,
    victim: nn.Module,
    data: DatasetSplits,
    database: CodeBank,
    device: torch.device,
    top: int = 10,
    thumb: int = 64,
    precision: str = "fp32",
) -> Gallery:
    """The retrieval gallery of a few queries: images and top-``top`` retrievals before and after the attack,
    with thumbnails (at most ``thumb`` pixels a side) so that the report needs neither the model nor the data."""

    def small(x: Tensor) -> Tensor:
        if x.shape[-1] <= thumb:
            return x
        return torch.nn.functional.interpolate(x, size=(thumb, thumb), mode="area")

    items, db_thumbs = [], {}
    db_labels = database.labels.cpu()
    clean_top = metrics.hamming_ranking(
        encode_images(victim, images, device, precision=precision), database.codes, top
    )
    adv_top = metrics.hamming_ranking(
        encode_images(victim, adversarial, device, precision=precision), database.codes, top
    )
    for row, index in enumerate(indices.tolist()):
        y = labels[row].cpu()
        ranked = [[int(j) for j in clean_top[row]], [int(j) for j in adv_top[row]]]
        relevant = [[bool((db_labels[j] * y).sum() > 0) for j in r] for r in ranked]
        items.append(
            GalleryItem(
                int(index),
                torch.nonzero(y)[:, 0].tolist(),
                Gallery.encode_image(small(images[row : row + 1])[0]),
                Gallery.encode_image(small(adversarial[row : row + 1])[0]),
                ranked[0],
                ranked[1],
                relevant[0],
                relevant[1],
            )
        )
        for j in ranked[0] + ranked[1]:
            if str(j) not in db_thumbs:
                db_thumbs[str(j)] = Gallery.encode_image(small(data.database[j][0][None])[0])
    shape = list(small(images[:1]).shape[1:])
    return Gallery(name, shape, items, db_thumbs, data.class_names)


def _victim_of(model: nn.Module) -> nn.Module:
    for attr in ("preactivation", "encode", "bits"):
        if not hasattr(model, attr):
            raise UserError(
                f"the model has no {attr!r}: wrap a plain nn.Module with robusthash.models.wrap_model"
            )
    return model


@dataclass
class Prepared:
    """What every attack of a suite shares (step 1 of :func:`evaluate_attacks`): the victim on its device, its
    code banks and the surrogates' (label -> (model, banks)), the queries (all, and this rank's share), their
    images, labels and the victim's clean codes, and the seconds the banks took."""

    suite: AttackSuite
    device: torch.device
    victim: nn.Module
    banks: Banks
    surrogates: dict[str, tuple[nn.Module, Banks]]
    indices: Tensor
    mine: Tensor
    images: Tensor
    my_labels: Tensor
    labels: Tensor
    clean_codes: Tensor
    setup_seconds: float
    label: str | None = None  # the model, as progress bars name it


def prepare(
    model: nn.Module,
    data: DatasetSplits,
    suite: AttackSuite,
    device: torch.device | str = "cpu",
    quiet: bool = True,
    surrogates: dict[str, nn.Module] | None = None,
    indices: Tensor | None = None,
    label: str | None = None,
) -> Prepared:
    """Step 1: check the suite and the model (garbage is refused, not scored), encode the banks and the clean
    queries; under torchrun each rank holds its strided share of the queries."""
    suite.validate()
    device = torch.device(device)
    victim = speed_up(_victim_of(model).to(device).eval(), suite.channels_last, suite.compile)
    transfer = [n for n in suite.attacks if ATTACKS.get(n).threat_model == "transfer"]
    if transfer and not surrogates:
        raise UserError(f"transfer attack(s) {', '.join(transfer)} need surrogate models (--surrogate)")
    began = time.perf_counter()
    banks = Banks.of(victim, data, device, quiet, suite.precision)
    surrogate_banks = (
        {
            k: (
                speed_up(_victim_of(m).to(device).eval(), suite.channels_last, suite.compile),
                Banks.of(m, data, device, quiet, suite.precision),
            )
            for k, m in (surrogates or {}).items()
        }
        if transfer
        else {}
    )
    setup_seconds = time.perf_counter() - began
    if indices is None:
        indices = query_subset(data, suite.queries, suite.seed)
    indices = check_indices(indices, len(data.query))
    mine = strided(indices, world())  # this rank's queries (all of them in one process)
    images, my_labels = query_images(data, mine)
    probe = torch.cat([images[:128], probe_images(data.database)])  # queries, and every class of the database
    check_model(victim, probe, device, suite.allow_saturated)
    warm_up(victim, images[:32], device)
    clean_codes = gather_strided(
        encode_images(victim, images, device, precision=suite.precision), len(indices)
    )
    return Prepared(
        suite,
        device,
        victim,
        banks,
        surrogate_banks,
        indices,
        mine,
        images,
        my_labels,
        labels_of(data.query)[indices].clone(),
        clean_codes,
        setup_seconds,
        label,
    )


def craft_attack(
    prep: Prepared,
    data: DatasetSplits,
    name: str,
    quiet: bool = True,
    resume: str | Path | None = None,
    run_config: dict[str, Any] | None = None,
) -> list[Crafted]:
    """Step 2: attack ``name`` on the prepared queries, once per crafter (the victim, or each surrogate of a
    transfer attack), fitted and timed; under torchrun the ranks' shards are gathered. The gallery's attack keeps
    the adversarial images of the gallery's queries. ``resume``: a folder of crafted shards (module docstring),
    keyed with ``run_config``."""
    suite, device = prep.suite, prep.device
    transfer = ATTACKS.get(name).threat_model == "transfer"
    crafters = list(prep.surrogates.items()) if transfer else [(None, (prep.victim, prep.banks))]
    fingerprint = model_fingerprint(prep.victim) if resume is not None else ""
    results = []
    for label, (crafter, own) in crafters:
        attack = create_attack(
            name,
            crafter,
            reference=own.reference.to(device),
            database=own.database,
            quiet=quiet,
            label=prep.label,
            **suite.options(name),
        )
        fit_began = time.perf_counter()
        attack.fit(quiet=quiet, train=data.train)
        fit_seconds = time.perf_counter() - fit_began
        if attack.recorded_fit_seconds is not None:  # a reused or resumed fit: its whole training time
            fit_seconds = attack.recorded_fit_seconds
        first_of_gallery = name == _gallery_attack(suite) and not results
        keep = (
            prep.indices[gallery_picks(len(prep.indices), suite.gallery_queries, suite.seed)]
            if first_of_gallery
            else None
        )
        if resume is None:
            crafted = craft(
                attack,
                prep.victim,
                prep.images,
                prep.my_labels,
                prep.mine,
                device,
                keep=keep,
                surrogate=label,
            )
        else:
            weights = fingerprint if label is None else f"{fingerprint}/{model_fingerprint(crafter)}"
            crafted = craft_resumable(
                attack,
                prep.victim,
                prep.images,
                prep.my_labels,
                prep.mine,
                device,
                Path(resume),
                weights,
                run_config or {},
                keep=keep,
                surrogate=label,
            )
        crafted.fit_seconds = fit_seconds
        crafted.wall_seconds = crafted.seconds
        if world().distributed:
            crafted = merge(all_gather_objects(crafted))
        results.append(crafted)
    return results


def score_run(
    prep: Prepared,
    data: DatasetSplits,
    crafted: list[Crafted],
    config: dict[str, Any] | None = None,
    model_meta: dict[str, Any] | None = None,
) -> RobustnessRun:
    """Step 3: score every crafted set against the clean run, draw the gallery, run the masking checks and
    return the :class:`~robusthash.results.RobustnessRun` (the robust mAP is the per-query minimum)."""
    suite, banks, w = prep.suite, prep.banks, world()
    clean = Scores.from_report(
        metrics.retrieval_report(
            prep.clean_codes, banks.database.codes, prep.labels, banks.database.labels, suite.topk
        )
    )
    outcomes = [score(c, prep.clean_codes, prep.labels, banks.database, suite.topk) for c in crafted]
    gallery = None
    shown = next((c for c in crafted if c.kept), None)
    if shown is not None:
        order = prep.indices.tolist()
        picks = torch.tensor([row for row, i in enumerate(order) if i in shown.kept])
        keep = prep.indices[picks]
        images, _ = query_images(data, keep)
        adversarial = torch.stack([shown.kept[int(i)] for i in keep.tolist()])
        gallery = build_gallery(
            shown.name,
            images,
            adversarial,
            prep.labels[picks],
            keep,
            prep.victim,
            data,
            banks.database,
            prep.device,
            precision=suite.precision,
        )
    flags = run_checks(
        prep.victim,
        prep.images,
        prep.my_labels,
        (banks.reference, banks.database),
        outcomes,
        suite.eps,
        suite.topk,
        suite.seed,
        sweep=suite.protocol == "robust",
    )
    return RobustnessRun(
        config={"suite": asdict(suite), **(config or {})},
        seed=suite.seed,
        environment=environment(prep.device),
        created=now(),
        model=model_meta or {},
        query_indices=prep.indices.tolist(),
        clean=clean,
        attacks=outcomes,
        setup_seconds=prep.setup_seconds,
        gallery=gallery,
        world_size=w.world_size,
        flags=flags,
    )


def evaluate_attacks(
    model: nn.Module,
    data: DatasetSplits,
    suite: AttackSuite,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    surrogates: dict[str, nn.Module] | None = None,
    config: dict[str, Any] | None = None,
    model_meta: dict[str, Any] | None = None,
    indices: Tensor | None = None,
    resume: str | Path | None = None,
    label: str | None = None,
) -> RobustnessRun:
    """Run ``suite`` against ``model`` (the victim) on ``data.query``: :func:`prepare`, :func:`craft_attack` for
    each attack, :func:`score_run` (see module docstring). ``label`` names the model in progress bars.

    ``surrogates`` (label -> model) craft the transfer attacks; ``indices`` restricts the run to a shard of
    the suite's queries (the rows of the result follow them); ``config`` and ``model_meta`` are recorded;
    ``resume``: a folder where crafted shards are kept and reused (module docstring).
    """
    prep = prepare(model, data, suite, device, quiet, surrogates, indices, label)
    run_config = {"suite": asdict(suite), **(config or {})}
    crafted = [c for name in suite.attacks for c in craft_attack(prep, data, name, quiet, resume, run_config)]
    run = score_run(prep, data, crafted, config, model_meta) if world().is_main else None
    return broadcast_object(run)


def gallery_picks(count: int, wanted: int, seed: int) -> Tensor:
    """Positions (among the queries run) of the gallery's queries: ``wanted`` drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=g)[: min(wanted, count)].sort().values


def _gallery_attack(suite: AttackSuite) -> str | None:
    """The gallery shows PgA when the suite runs it, else the first attack."""
    if suite.gallery_queries == 0:
        return None
    return "pga" if "pga" in suite.attacks else suite.attacks[0]
