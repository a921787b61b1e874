"""Typed records that cross module lines, so that no one reads a metadata dictionary by key.

:class:`DatasetRef` names a dataset's splits exactly (the arguments of :func:`~robusthash.data.load_dataset`):
checkpoints, the zoo, experiment files, results and the command line all record and compare it through this
one class. :class:`ModelRecord` is what a checkpoint says of its model; only this module reads those keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from robusthash.config import restore
from robusthash.data import DatasetSplits, load_dataset
from robusthash.errors import UserError


@dataclass(frozen=True)
class DatasetRef:
    """Which splits: dataset ``name``, its files' folder, the database size (an item count, or ``all``), the
    seed of the train / query / database draw and, for list datasets, the image side."""

    name: str = "fashion-mnist"
    data_dir: str | None = None
    database: int | str = 10_000
    split_seed: int = 0
    image_size: int | None = None

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> DatasetRef:
        """The reference a checkpoint, results file or options mapping recorded (other keys, such as
        ``num_classes``, are ignored; missing ones read at their defaults)."""
        stored = stored or {}
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in stored.items() if k in known and v is not None}
        return cls(**{**values, "data_dir": stored.get("data_dir"), "image_size": stored.get("image_size")})

    def with_given(self, **given: Any) -> DatasetRef:
        """This reference with each given (not ``None``) field replacing its own: what a user states first, then
        what a checkpoint recorded."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UserError(
                f"unknown dataset field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def options(self) -> dict[str, Any]:
        """As a plain mapping, the form results and checkpoints store."""
        return asdict(self)

    def validate(self, where: str = "dataset") -> None:
        if self.database != "all" and (not isinstance(self.database, int) or self.database < 1):
            raise UserError(f"{where} database must be a positive integer or 'all', got {self.database!r}")
        if self.split_seed < 0:
            raise UserError(f"{where} split_seed must be >= 0, got {self.split_seed}")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"{where} image_size must be >= 1 pixels, got {self.image_size}")

    def load(self) -> DatasetSplits:
        return load_dataset(self.name, self.data_dir, self.split_seed, self.database, self.image_size)


RECORD_FIELDS = ("kind", "model", "train", "dataset", "defense", "seed", "environment", "history")


@dataclass
class ModelRecord:
    """What a checkpoint says of its model (its ``meta``): ``kind`` (``trained`` or ``defended``), ``model`` (the
    model's own config, read by :func:`~robusthash.models.model_from_config`), ``train`` (the training config),
    ``dataset`` (a :class:`DatasetRef` and the data's classes and image shape), ``defense`` (method, config and
    the base model's fingerprint, for a defended model), ``seed``, ``environment`` and the per-epoch
    ``history``. Keys of later versions are kept in ``extra`` and written back."""

    kind: str
    model: dict[str, Any]
    train: dict[str, Any]
    dataset: dict[str, Any]
    defense: dict[str, Any] | None = None
    seed: int | None = None
    environment: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: Any, where: str = "checkpoint") -> ModelRecord:
        """The record of a stored ``meta``; :class:`UserError` naming what is missing when it is damaged."""
        if not isinstance(meta, dict):
            raise UserError(f"{where} is a damaged robusthash checkpoint (missing meta)")
        missing = [f"meta.{k}" for k in ("model", "train", "dataset") if not isinstance(meta.get(k), dict)]
        missing += [] if meta.get("kind") in ("trained", "defended") else ["meta.kind"]
        if "meta.train" not in missing and not isinstance(meta["train"].get("loss"), str):
            missing.append("meta.train.loss")
        if missing:
            raise UserError(f"{where} is a damaged robusthash checkpoint (missing {', '.join(missing)})")
        known = {k: meta[k] for k in RECORD_FIELDS if meta.get(k) is not None}
        return cls(**known, extra={k: v for k, v in meta.items() if k not in RECORD_FIELDS})

    @classmethod
    def of_summary(cls, summary: Mapping[str, Any] | None) -> ModelRecord:
        """The record a results file kept of its model (:meth:`summary`); parts it lacks (a results file of an
        earlier version, or of a model run without a checkpoint) read as empty."""
        s = summary or {}
        return cls(
            kind=str(s.get("kind") or "trained"),
            model=dict(s.get("model") or {}),
            train=dict(s.get("train") or {}),
            dataset=dict(s.get("dataset") or {}),
            defense=s.get("defense") or None,
            seed=s.get("seed"),
        )

    def to_meta(self) -> dict[str, Any]:
        """The stored form (a plain mapping of JSON-like values)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, **self.extra}

    def recipe(self) -> dict[str, Any]:
        """Everything that shapes the model, for "is this the same run?" (resuming a training or a defence, and
        reusing a zoo model): kind, training config, data split and classes, model description and, for a
        defended model, the defence config and the base model's fingerprint. Stored configs are read back with
        their classes (:func:`~robusthash.config.restore`), so a record written before a field existed matches a
        run that leaves the field at its default."""
        recipe = {
            "kind": self.kind,
            "train": restore("train", self.train),
            "data": self.data_ref.options(),
            "classes": self.num_classes,
            "model": self.model,
        }
        if self.defense is not None:
            recipe |= {"defense": restore("defense", self.defense_config), "base": self.base_fingerprint}
        return recipe

    def summary(self) -> dict[str, Any]:
        """What results files record of the model: kind, model, train, dataset, defense and seed."""
        return {
            "kind": self.kind,
            "model": self.model,
            "train": self.train,
            "dataset": self.dataset,
            "defense": self.defense,
            "seed": self.seed,
        }

    @property
    def data_ref(self) -> DatasetRef:
        return DatasetRef.of(self.dataset)

    @property
    def num_classes(self) -> int | None:
        return self.dataset.get("num_classes")

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        shape = self.dataset.get("image_shape")
        return None if shape is None else tuple(shape)

    @property
    def in_channels(self) -> int:
        return int(self.model["in_channels"])

    @property
    def external(self) -> bool:
        """A model a user brought (rebuilt from their own definition, not from :attr:`model`)."""
        return bool(self.model.get("external"))

    @property
    def backbone(self) -> str:
        return str(self.model.get("backbone", "?"))

    @property
    def bits(self) -> int | None:
        return self.model.get("bits")

    @property
    def loss(self) -> str:
        return str(self.train.get("loss", "?"))

    @property
    def loss_options(self) -> dict[str, Any]:
        return dict(self.train.get("loss_options") or {})

    @property
    def defense_method(self) -> str | None:
        """The defence's registered name; ``None`` for an undefended model."""
        return None if self.defense is None else self.defense.get("method")

    @property
    def defense_config(self) -> dict[str, Any] | None:
        return None if self.defense is None else self.defense.get("config")

    @property
    def base_fingerprint(self) -> str | None:
        return None if self.defense is None else self.defense.get("base_fingerprint")
