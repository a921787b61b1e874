"""Typed records that cross module lines, so that no one reads a metadata dictionary by key.

:class:`DatasetRef` names a dataset's splits exactly (the arguments of :func:`~robusthash.data.load_dataset`):
checkpoints, the zoo, experiment files, results and the command line all record and compare it through this
one class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

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
