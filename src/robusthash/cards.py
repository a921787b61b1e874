"""Model cards: one fixed protocol measured on any model, written as JSON with a schema (RobustBench's cards, for
deep hashing).

The card protocol (:class:`CardProtocol`, ``robusthash-card/1``) is the robust protocol of
:mod:`robusthash.robustness`: the worst-case cascade (gradient stages and a gradient-free Square stage) and PgA on a
seeded subset of the queries, at eps 8/255, mAP@1000, with the checks for masked gradients. The card keeps, per
query, the clean AP and the robust AP (the lowest AP any attack of the protocol reached: an upper bound on the
true robust AP, never a certificate), so that a later run on any subset of its queries can be compared with it
query by query (each query's result depends on its index and the seed alone). Transfer attacks crafted on
surrogate models, where some are given, are listed on the card but kept out of its robust AP: which surrogates a
model has differs from model to model, and a ranked number must come from the same protocol for every model.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import MISSING, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robusthash.checkpoint import Checkpoint
from robusthash.data import DatasetSplits
from robusthash.errors import UserError
from robusthash.results import CardAttack, ModelCard, RobustnessRun, from_json, now, read_json
from robusthash.robustness import AttackSuite, evaluate_attacks, query_subset

PROTOCOL = "robusthash-card/1"
SCHEMA_FILE = Path(__file__).with_name("card.schema.json")


@dataclass(frozen=True)
class CardProtocol:
    """The settings that change a card's numbers; two cards rank together only when all of them agree."""

    queries: int = 100
    seed: int = 0
    eps: float = 8 / 255
    topk: int = 1000
    attacks: tuple[str, ...] = ("pga",)  # run beside the robust cascade (which always runs, first)
    transfer: tuple[str, ...] = ("nag",)  # crafted on each surrogate, when surrogates are given

    def validate(self) -> None:
        if self.queries < 1:
            raise UserError(f"a card needs at least 1 query, got {self.queries}")

    def suite(self, with_surrogates: bool) -> AttackSuite:
        attacks = list(self.attacks) + (list(self.transfer) if with_surrogates else [])
        return AttackSuite(
            attacks=attacks,
            protocol="robust",
            eps=self.eps,
            topk=self.topk,
            queries=self.queries,
            seed=self.seed,
            gallery_queries=0,
        )

    def record(self) -> dict[str, Any]:
        """What the card says of its protocol (the ranked part: transfer attacks are listed, not ranked)."""
        return {
            "name": PROTOCOL,
            "threat": "linf",
            "eps": self.eps,
            "topk": self.topk,
            "queries": self.queries,
            "seed": self.seed,
            "attacks": ["cascade", *self.attacks],
        }


def _not_default(values: dict[str, Any] | None, cls: type) -> dict[str, Any] | None:
    """``values`` without the fields of dataclass ``cls`` that hold their default."""
    if values is None:
        return None
    defaults = {
        f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        for f in fields(cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    }
    return {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}


def recipe_sha256(checkpoint: Checkpoint) -> str:
    """SHA-256 of the training recipe (:meth:`~robusthash.records.ModelRecord.recipe`) as canonical JSON, each
    config reduced to the fields that differ from their defaults: a field added to a config later (at a default
    that keeps the earlier behaviour) leaves the hash of an earlier model's recipe as it was."""
    from robusthash.defenses import DEFENSES, DefenseConfig
    from robusthash.training import TrainConfig

    recipe = dict(checkpoint.record.recipe())
    recipe["train"] = _not_default(recipe.get("train"), TrainConfig)
    defense = recipe.get("defense")
    if defense:
        options = DEFENSES.get(defense["method"]).Options if defense.get("method") in DEFENSES else None
        defense = _not_default(defense, DefenseConfig)
        if options is not None and defense and "method_options" in defense:
            defense["method_options"] = _not_default(defense["method_options"], options)
        recipe["defense"] = defense
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card_of(
    run: RobustnessRun,
    name: str,
    checkpoint: Checkpoint,
    protocol: CardProtocol,
    seconds: float,
    checkpoint_sha256: str | None = None,
) -> ModelCard:
    """The card of a finished robust-protocol run of ``protocol`` (its ranked attacks and the transfer ones)."""
    ranked = [a for a in run.attacks if a.threat_model != "transfer"]
    robust_ap = np.min(np.stack([a.scores.ap for a in ranked]), axis=0).tolist() if ranked else run.clean.ap
    history = checkpoint.record.history
    training = sum(float(h.get("seconds", 0.0)) for h in history) if history else None
    return ModelCard(
        config={
            "protocol": protocol.record(),
            "surrogates": sorted({a.surrogate for a in run.attacks} - {None}),
        },
        seed=protocol.seed,
        environment=dict(run.environment),
        created=now(),
        name=name,
        model=checkpoint.summary(),
        recipe_sha256=recipe_sha256(checkpoint),
        checkpoint_sha256=checkpoint_sha256,
        protocol=protocol.record(),
        query_indices=list(run.query_indices),
        clean_ap=list(run.clean.ap),
        robust_ap=[float(v) for v in robust_ap],
        clean_map=float(np.mean(run.clean.ap)),
        robust_map=float(np.mean(robust_ap)),
        attacks=[
            CardAttack(
                name=a.name,
                display_name=a.display_name,
                threat_model=a.threat_model,
                map=a.map,
                seconds_per_image=a.seconds_per_image,
                surrogate=a.surrogate,
            )
            for a in run.attacks
        ],
        flags=list(run.flags),
        seconds=seconds,
        training_seconds=training,
    )


def measure_card(
    name: str,
    model: nn.Module,
    checkpoint: Checkpoint,
    data: DatasetSplits,
    protocol: CardProtocol = CardProtocol(),
    device: torch.device | str = "cpu",
    surrogates: dict[str, nn.Module] | None = None,
    indices: torch.Tensor | None = None,
    quiet: bool = False,
    resume: str | Path | None = None,
) -> ModelCard:
    """Run the card protocol on ``model`` (described by ``checkpoint``: a robusthash checkpoint, or the record a
    brought model gets) over ``data`` and return its card. ``surrogates`` (label -> model) craft the transfer
    attacks. ``indices`` (a subset of the protocol's queries) re-measures part of a card: each query's numbers
    do not depend on the rest."""
    protocol.validate()
    suite = protocol.suite(bool(surrogates))
    if indices is not None:
        allowed = set(query_subset(data, protocol.queries, protocol.seed).tolist())
        if not set(torch.as_tensor(indices).tolist()) <= allowed:
            raise UserError("the queries to re-measure must be among the card protocol's queries")
    start = time.perf_counter()
    run = evaluate_attacks(
        model,
        data,
        suite,
        device,
        quiet=quiet,
        surrogates=surrogates,
        config={"dataset": checkpoint.record.data_ref.options()},
        model_meta=checkpoint.summary(),
        indices=indices,
        resume=resume,
        label=name,
    )
    sha = file_sha256(checkpoint.path) if Path(checkpoint.path).is_file() else None
    return card_of(run, name, checkpoint, protocol, time.perf_counter() - start, sha)


# ----------------------------------------------------------------------------------------------- the schema
@cache
def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a card file, shipped as ``card.schema.json`` next to this module."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _check(value: Any, spec: dict[str, Any], where: str) -> None:
    """Check ``value`` against the subset of JSON Schema the card schema uses (type, const, required,
    properties, additionalProperties, items, minimum, maximum); raise :class:`UserError` naming the first field
    that is wrong."""
    kinds = spec.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        ok = any(
            isinstance(value, _TYPES[k]) and not (k in ("number", "integer") and isinstance(value, bool))
            for k in kinds
        )
        if not ok:
            raise UserError(f"{where} must be {' or '.join(kinds)}, got {type(value).__name__}")
    if "const" in spec and value != spec["const"]:
        raise UserError(f"{where} must be {spec['const']!r}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in spec and value < spec["minimum"]:
            raise UserError(f"{where} must be >= {spec['minimum']}, got {value}")
        if "maximum" in spec and value > spec["maximum"]:
            raise UserError(f"{where} must be <= {spec['maximum']}, got {value}")
    if isinstance(value, dict):
        for key in spec.get("required", []):
            if key not in value:
                raise UserError(f"{where} lacks the field {key!r}")
        if spec.get("additionalProperties") is False:
            extra = sorted(set(value) - set(spec.get("properties", {})))
            if extra:
                raise UserError(f"{where} has unknown field(s) {', '.join(extra)}")
        for key, sub in spec.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in spec:
        for i, item in enumerate(value):
            _check(item, spec["items"], f"{where}[{i}]")


def validate(doc: Any, where: str = "card") -> None:
    """Check a parsed card file against :func:`schema` and its own consistency (the per-query lists have one
    entry per query; the mAPs are their means); raise :class:`UserError` naming what is wrong."""
    _check(doc, schema(), where)
    n = len(doc["query_indices"])
    for key in ("clean_ap", "robust_ap"):
        if len(doc[key]) != n:
            raise UserError(f"{where}: {key} has {len(doc[key])} entries for {n} queries")
    for key, per_query in (("clean_map", "clean_ap"), ("robust_map", "robust_ap")):
        if n and abs(doc[key] - float(np.mean(doc[per_query]))) > 1e-9:
            raise UserError(f"{where}: {key} {doc[key]} is not the mean of {per_query}")


def read_card(path: str | Path) -> ModelCard:
    """A card file, validated (:func:`validate`); anything else is a :class:`UserError`."""
    doc = read_json(path, "card file")
    validate(doc, str(path))
    card = from_json(doc, path)
    assert isinstance(card, ModelCard)
    return card


def card_fields() -> list[str]:
    """Every field of a card file (the schema's properties list exactly these)."""
    return ["schema", "kind", *(f.name for f in fields(ModelCard))]


__all__ = [
    "PROTOCOL",
    "CardProtocol",
    "card_of",
    "measure_card",
    "schema",
    "validate",
    "read_card",
    "recipe_sha256",
    "file_sha256",
]
