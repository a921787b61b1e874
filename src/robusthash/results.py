"""Typed results: what each run produces, with ``to_json`` / ``from_json`` and a schema version.

- :class:`Scores`: retrieval of one set of query codes (mAP@K with per-query AP, PR curve, P@N).
- :class:`AttackOutcome`: one attack on one model, with per-query AP, t-AP, bits flipped and norms.
- :class:`MaskingFlag`: one check for masked gradients, with what it means and what to do.
- :class:`Gallery`: a few queries, clean and adversarial, with their top retrievals (thumbnails included).
- :class:`RobustnessRun`: ``robusthash attack`` (clean scores, every attack, the robust mAP, the gallery).
- :class:`EvaluationRun`: ``robusthash evaluate`` (clean retrieval).
- :class:`DefenseRun`: ``robusthash defend`` (the adversarial-training run and its clean retrieval).
- :class:`ExperimentRun`: ``robusthash run`` / ``demo`` (a table of models x attacks over robustness files).
- :class:`BenchmarkRows`: a benchmark's rows, named by the benchmark that wrote them.
- :class:`ModelCard`: ``robusthash benchmark`` (a model card: the model, the card protocol, clean and robust AP).

Every document carries ``schema`` (``robusthash-results/2``), ``kind``, the config, seed, versions and device.
Files of schema 1 (``command`` = attack / evaluate / demo, benchmark files without a schema) are read too.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robusthash.errors import UserError
from robusthash.records import DatasetRef, ModelRecord
from robusthash.runtime import atomic_write_json

SCHEMA_VERSION = 2
SCHEMA = f"robusthash-results/{SCHEMA_VERSION}"
# schema 1 named a table of rows by the script that wrote it: ``python benchmarks/bench_attacks.py ...``
LEGACY_ROWS = re.compile(r"(?:^|[\s/])bench_(\w+)\.py\b")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class Scores:
    """Retrieval of a set of query codes: mAP@topk (mean of ``ap``), PR curve by Hamming radius, P@N."""

    map: float
    topk: int | None
    ap: list[float]
    pr_curve: dict[str, list[float]] = field(default_factory=dict)
    p_at_n: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Scores:
        return cls(
            float(report["map"]),
            report["topk"],
            [float(v) for v in np.asarray(report["ap"]).tolist()],
            report.get("pr_curve", {}),
            report.get("p_at_n", {}),
        )


@dataclass
class AttackOutcome:
    """One attack against one model. Per-query lists follow ``RobustnessRun.query_indices``.

    ``seconds`` is crafting time (wall clock, all queries; under torchrun the sum of the ranks' times, so that
    seconds per image compare across world sizes), ``wall_seconds`` the wall clock the crafting took (the slowest
    rank); ``fit_seconds`` the attack's preparation (e.g. THA's PrototypeNet; for a fitted state reused from a
    checkpoint, the training time stored with it), reported apart and amortised over the queries in
    :attr:`seconds_per_image_amortised`.
    """

    name: str
    display_name: str
    settings: dict[str, Any]
    threat_model: str
    targeted: bool
    scores: Scores
    seconds: float
    bits_flipped: list[float]
    linf: list[float]
    l2: list[float]
    fit_seconds: float = 0.0
    tmap: float | None = None
    tap: list[float] | None = None
    surrogate: str | None = None
    success: list[bool] | None = None
    wall_seconds: float | None = None
    queries_used: list[int] | None = None  # query attacks: oracle images sent per query
    # query attacks: budget (images per query) -> mAP reached by then
    budget_map: dict[str, float] | None = None
    # the robust cascade: stage -> per-query AP (None: skipped)
    stages: dict[str, list[float | None]] | None = None

    @property
    def map(self) -> float:
        return self.scores.map

    @property
    def success_rate(self) -> float | None:
        """Targeted attacks: the share of queries that succeed under NAG's protocol (more than 10 items of the
        target class within Hamming radius 5; :func:`~robusthash.metrics.targeted_success`)."""
        return None if self.success is None else _mean([float(s) for s in self.success])

    @property
    def queries(self) -> int:
        return len(self.scores.ap)

    def query_counts(self) -> dict[str, float] | None:
        """Query attacks: mean, median and max oracle images sent per query (None for other attacks)."""
        if not self.queries_used:
            return None
        used = np.asarray(self.queries_used, dtype=np.float64)
        return {"mean": float(used.mean()), "median": float(np.median(used)), "max": float(used.max())}

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(self.queries, 1)

    @property
    def seconds_per_image_amortised(self) -> float:
        return (self.seconds + self.fit_seconds) / max(self.queries, 1)

    @property
    def mean_bits_flipped(self) -> float:
        return _mean(self.bits_flipped)

    @property
    def mean_linf(self) -> float:
        return _mean(self.linf)

    @property
    def mean_l2(self) -> float:
        return _mean(self.l2)

    @property
    def steps(self) -> int | None:
        return self.settings.get("steps")


@dataclass
class MaskingFlag:
    """One check for masked gradients (:mod:`robusthash.masking`): what was measured, whether it fired, what
    that means and what to do."""

    name: str
    value: float
    threshold: float
    fired: bool
    measured: str  # what the check found, in words
    meaning: str  # what a firing means
    advice: str  # what to do when it fires

    def line(self) -> str:
        head = f"{'FLAG' if self.fired else 'ok'} {self.name}: {self.measured}"
        return f"{head}. {self.meaning}. What to do: {self.advice}" if self.fired else head


@dataclass
class GalleryItem:
    """One query: its labels, clean and adversarial images (uint8 thumbnails, base64) and the database indices,
    relevance and thumbnails of the top retrievals before and after the attack."""

    query_index: int
    labels: list[int]
    clean: str
    adversarial: str
    clean_top: list[int]
    adversarial_top: list[int]
    clean_relevant: list[bool]
    adversarial_relevant: list[bool]


@dataclass
class Gallery:
    attack: str
    shape: list[int]  # (channels, height, width) of every thumbnail
    items: list[GalleryItem]
    database: dict[str, str]  # database index -> thumbnail
    class_names: list[str] | None = None

    @staticmethod
    def encode_image(image: Any) -> str:
        """A float image (C, H, W) in [0, 1] as base64 of its uint8 pixels (display only)."""
        array = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
        return base64.b64encode(array.tobytes()).decode("ascii")

    def decode_image(self, text: str) -> np.ndarray:
        data = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
        return data.reshape(self.shape).astype(np.float32) / 255


@dataclass
class _Document:
    """Fields every results document has."""

    kind: ClassVar[str] = ""
    config: dict[str, Any]
    seed: int | None
    environment: dict[str, Any]
    created: str

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": self.kind, **asdict(self)}

    def write(self, path: str | Path) -> Path:
        atomic_write_json(self.to_json(), path)
        return Path(path)


def model_label(record: ModelRecord) -> str:
    """``undefended`` or the defence's display name."""
    defense = record.defense_method
    if not defense:
        return "undefended"
    from robusthash.defenses import DEFENSES

    return DEFENSES.get(defense).display_name if defense in DEFENSES else defense


class _OfModel:
    """A document that records its model (``model``: the checkpoint's summary), typed on reading."""

    model: dict[str, Any]

    @property
    def record(self) -> ModelRecord:
        """What the results recorded of the model, typed."""
        return ModelRecord.of_summary(self.model)

    @property
    def model_label(self) -> str:
        return model_label(self.record)


@dataclass
class RobustnessRun(_OfModel, _Document):
    kind: ClassVar[str] = "robustness"
    model: dict[str, Any]  # what the checkpoint says of the model: kind, model, train, dataset, defense, seed
    query_indices: list[int]
    clean: Scores
    attacks: list[AttackOutcome]
    setup_seconds: float = 0.0
    gallery: Gallery | None = None
    world_size: int = 1  # processes of the torchrun job that produced it
    flags: list[MaskingFlag] = field(default_factory=list)  # checks for masked gradients

    def attack(self, name: str) -> AttackOutcome:
        for outcome in self.attacks:
            if outcome.name == name:
                return outcome
        raise KeyError(name)

    @property
    def attack_names(self) -> list[str]:
        return [a.name for a in self.attacks]

    @property
    def robust_ap(self) -> list[float]:
        """Per query, the lowest AP any attack reached (the worst case over the attacks run)."""
        if not self.attacks:
            return list(self.clean.ap)
        return np.min(np.stack([a.scores.ap for a in self.attacks]), axis=0).tolist()

    @property
    def robust_map(self) -> float:
        return _mean(self.robust_ap)

    @property
    def dataset(self) -> DatasetRef:
        """The split the attacks ran on: the run's own dataset options, else the model's recorded split."""
        return (
            DatasetRef.of(self.config.get("dataset")) if self.config.get("dataset") else self.record.data_ref
        )

    @property
    def suite(self) -> dict[str, Any]:
        """The attack suite's settings, as recorded."""
        return dict(self.config.get("suite") or {})

    def describe(self) -> str:
        record, eps = self.record, self.suite.get("eps")
        eps_text = f"eps {eps * 255:.0f}/255" if isinstance(eps, (int, float)) else "eps ?"
        model = (
            f"your model {record.backbone.removeprefix('external:')}"
            if record.external
            else f"{record.loss} / {record.backbone}"
        )
        return (
            f"{model} / {record.bits or '?'} bits on {self.dataset.name}; "
            f"protocol {self.suite.get('protocol', '?')}, {eps_text}, {len(self.query_indices)} queries, "
            f"seed {self.seed}"
        )


@dataclass
class EvaluationRun(_Document):
    kind: ClassVar[str] = "evaluation"
    model: dict[str, Any]
    clean: Scores


@dataclass
class DefenseRun(_Document):
    """``robusthash defend``: one adversarial-training run, its per-epoch losses and its clean retrieval."""

    kind: ClassVar[str] = "defense"
    method: str
    checkpoint: str
    base_checkpoint: str
    base_fingerprint: str
    history: list[dict[str, float]]
    seconds: float
    clean: Scores


@dataclass
class ExperimentRow:
    """One model of an experiment: its label and the robustness file of its attacks (relative path)."""

    label: str
    results: str
    checkpoint: str | None = None


@dataclass
class ExperimentRun(_Document):
    kind: ClassVar[str] = "experiment"
    name: str
    rows: list[ExperimentRow]
    seconds: float = 0.0
    certified: list[str] = field(default_factory=list)  # the CertifyRun files of a [certify] stage
    cards: list[str] = field(default_factory=list)  # the ModelCard files of a [card] stage


@dataclass
class BenchmarkRows(_Document):
    """A benchmark's rows (plain dicts, one per measurement); ``benchmark`` names the script's view."""

    kind: ClassVar[str] = "benchmark"
    benchmark: str
    command: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None = None
    markdown: str | None = None  # the benchmark's own tables, rendered by its script
    figures: dict[str, str] | None = None  # the figures its Markdown links: file name -> base64 PNG

    def figure_bytes(self) -> dict[str, bytes]:
        """The stored figures, decoded (a damaged entry is a :class:`UserError` naming it)."""
        out = {}
        for name, data in (self.figures or {}).items():
            try:
                out[Path(name).name] = base64.b64decode(data, validate=True)
            except (ValueError, TypeError):
                raise UserError(f"benchmark {self.benchmark}: figure {name!r} is not base64 data") from None
        return out


@dataclass
class CertifyRun(_OfModel, _Document):
    """Center smoothing's certificates on a query subset (:mod:`robusthash.certify`), with the empirical side.

    Per query: the base model's AP and the smoothed model's (whole database); per certified L2 radius (index k
    of ``radii``): the certified lower bound on AP (``certified_ap[k]``, 0 where the query abstains), the
    Hamming radius it rests on (``hamming[k]``, None where it abstains) and, per attack, the smoothed model's AP
    on that attack's L2 images (``empirical_ap[attack][k]``, None at radius 0)."""

    kind: ClassVar[str] = "certify"
    model: dict[str, Any]
    sigma: float
    radii: list[float]
    query_indices: list[int]
    clean_ap: list[float]
    smoothed_ap: list[float]
    certified_ap: list[list[float]]
    hamming: list[list[int | None]]
    abstained: list[bool]
    smoothing_error: list[int | None]
    empirical_ap: dict[str, list[list[float] | None]] = field(default_factory=dict)
    certify_seconds: float = 0.0

    @property
    def certified_map(self) -> list[float]:
        """Per radius: the mean certified lower bound (abstentions count 0)."""
        return [_mean(v) for v in self.certified_ap]

    @property
    def empirical_ap_min(self) -> list[list[float]]:
        """Per radius, per query: the lowest smoothed AP found (the clean query, or any attack's image)."""
        out = []
        for k in range(len(self.radii)):
            found = [v[k] for v in self.empirical_ap.values() if v[k] is not None]
            out.append(np.min(np.stack([self.smoothed_ap, *found]), axis=0).tolist())
        return out

    @property
    def empirical_map(self) -> list[float]:
        """Per radius: the smoothed model's mAP under the attacks run (an upper bound on its robust mAP)."""
        return [_mean(v) for v in self.empirical_ap_min]

    @property
    def abstain_rate(self) -> float:
        return _mean([float(a) for a in self.abstained])


@dataclass
class CardAttack:
    """One attack of a model card: its mAP over the card's queries, what it could see, what it cost."""

    name: str
    display_name: str
    threat_model: str
    map: float
    seconds_per_image: float
    surrogate: str | None = None


@dataclass
class ModelCard(_OfModel, _Document):
    """A model card (:mod:`robusthash.cards`): what the model is (its record, the SHA-256 of its training recipe
    and of its checkpoint), how it was measured (``protocol``: the card protocol's name and every setting that
    changes a number; cards rank against each other only when these agree) and what came out: per query, the
    clean AP and the robust AP (the lowest AP any attack of the protocol reached, an upper bound on the true
    robust AP), per attack its mAP, the checks for masked gradients, and the cost."""

    kind: ClassVar[str] = "card"
    name: str
    model: dict[str, Any]  # the checkpoint's record: kind, model, train, dataset, defense, seed
    recipe_sha256: str
    checkpoint_sha256: str | None
    protocol: dict[str, Any]
    query_indices: list[int]
    clean_ap: list[float]
    robust_ap: list[float]
    clean_map: float
    robust_map: float
    attacks: list[CardAttack]
    flags: list[MaskingFlag]
    seconds: float  # wall time of the whole measurement
    training_seconds: float | None = None  # the recorded epochs of the model's last training stage
    bound: str = "upper"  # the robust mAP is an upper bound: the worst case the attacks found

    @property
    def eps(self) -> float:
        return float(self.protocol["eps"])

    @property
    def group(self) -> tuple[str, int | None, int]:
        """What a leaderboard ranks within: dataset, bits and eps (in pixel levels of 255)."""
        return (self.record.data_ref.name, self.record.bits, round(self.eps * 255))

    @property
    def protocol_key(self) -> str:
        """The protocol as canonical JSON: two cards are comparable only when these are equal."""
        return json.dumps(self.protocol, sort_keys=True)

    @property
    def fired_flags(self) -> list[MaskingFlag]:
        return [f for f in self.flags if f.fired]


Document = RobustnessRun | EvaluationRun | DefenseRun | ExperimentRun | BenchmarkRows | CertifyRun | ModelCard
KINDS: dict[str, type] = {
    c.kind: c
    for c in (RobustnessRun, EvaluationRun, DefenseRun, ExperimentRun, BenchmarkRows, CertifyRun, ModelCard)
}


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Construct dataclass ``cls`` from JSON, recursing into the typed fields."""
    nested = {"clean": Scores, "scores": Scores, "gallery": Gallery}
    values = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name in nested and isinstance(value, dict):
            value = _build(nested[f.name], value)
        elif f.name == "attacks" and isinstance(value, list):
            value = [_build(CardAttack if cls is ModelCard else AttackOutcome, v) for v in value]
        elif f.name == "flags" and isinstance(value, list):
            value = [_build(MaskingFlag, v) for v in value]
        elif f.name == "items" and cls is Gallery:
            value = [_build(GalleryItem, v) for v in value]
        elif f.name == "rows" and cls is ExperimentRun:
            value = [_build(ExperimentRow, v) for v in value]
        values[f.name] = value
    return cls(**values)


def _from_legacy(doc: dict[str, Any], path: Path) -> Document:
    """Schema 1: ``command`` said the kind; attack results were a dict by attack name."""
    command = str(doc.get("command", ""))
    common = {
        "config": doc.get("config") or {},
        "seed": doc.get("seed"),
        "environment": doc.get("environment") or {},
        "created": doc.get("created", ""),
    }
    results = doc.get("results") or {}
    if command == "attack":
        outcomes = []
        for name, r in results["attacks"].items():
            settings = r.get("settings", {})
            outcomes.append(
                AttackOutcome(
                    name=name,
                    display_name=_display_name(name),
                    settings=settings,
                    threat_model=settings.get("threat_model", "white-box"),
                    targeted=bool(r.get("targeted")),
                    scores=Scores.from_report(r),
                    seconds=float(r["seconds"]),
                    bits_flipped=[float(r["bits_flipped"])] * len(r["ap"]),
                    linf=[float(r["linf"])] * len(r["ap"]),
                    l2=[float(r["l2"])] * len(r["ap"]),
                    tmap=r.get("tmap"),
                )
            )
        return RobustnessRun(
            **common,
            model=doc.get("model") or {},
            query_indices=results.get("query_indices", []),
            clean=Scores.from_report(results["clean"]),
            attacks=outcomes,
            setup_seconds=results.get("setup_seconds", 0.0),
        )
    if command == "evaluate":
        return EvaluationRun(
            **common,
            model=doc.get("model") or {},
            clean=Scores.from_report({**results["clean"], "ap": results["clean"].get("ap", [])}),
        )
    if command == "demo":
        rows = [
            ExperimentRow(label=name, results=f"attacks-{name}.json") for name in (results.get("table") or {})
        ]
        return ExperimentRun(**common, name="demo", rows=rows)
    if match := LEGACY_ROWS.search(command):
        if not isinstance(doc.get("rows", []), list):
            raise UserError(f"{path} is a damaged benchmark file: 'rows' must be a list")
        return BenchmarkRows(
            **common,
            benchmark=match.group(1),
            command=command,
            rows=doc.get("rows", []),
            summary=doc.get("summary"),
        )
    raise UserError(
        f"{path} is not a robusthash results file (no schema, and command {command!r} is none of "
        "attack, evaluate, demo or a benchmark script)"
    )


def _display_name(attack: str) -> str:
    from robusthash.attacks import ATTACKS

    return ATTACKS.get(attack).display_name if attack in ATTACKS else attack


def from_json(doc: Any, path: str | Path = "results") -> Document:
    """The typed document of a parsed results file (schema 2, or schema 1 converted)."""
    path = Path(path)
    if not isinstance(doc, dict):
        raise UserError(f"{path} is not a robusthash results file (expected a JSON object)")
    schema = doc.get("schema")
    try:
        if schema is None or schema == "robusthash-results/1":
            return _from_legacy(doc, path)
        if not (isinstance(schema, str) and schema.startswith("robusthash-results/")):
            raise UserError(f"{path} is not a robusthash results file (schema {schema!r})")
        version = schema.rsplit("/", 1)[1]
        if not version.isdigit() or int(version) > SCHEMA_VERSION:
            raise UserError(
                f"{path} was written by a newer robusthash (schema {schema}); this version reads up to "
                f"{SCHEMA}: upgrade robusthash"
            )
        kind = doc.get("kind")
        if kind not in KINDS:
            raise UserError(f"{path} has an unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        if kind == "benchmark" and not (
            isinstance(doc.get("rows"), list) and all(isinstance(r, dict) for r in doc["rows"])
        ):
            raise UserError(f"{path} is a damaged benchmark file: 'rows' must be a list of objects")
        return _build(KINDS[kind], doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path} is a damaged results file ({type(exc).__name__}: {exc})") from None


def read_json(path: str | Path, what: str = "results file") -> Any:
    """The parsed JSON of ``path``; a missing or non-JSON file raises :class:`UserError` naming it as ``what``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a robusthash {what} (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def load_results(path: str | Path) -> Document:
    """Read and type a results file; a missing, non-JSON or foreign file raises :class:`UserError`."""
    return from_json(read_json(path), Path(path))
