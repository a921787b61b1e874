"""The typed records: a checkpoint's meta and a dataset reference read and written through one class each."""

from __future__ import annotations

import pytest

from robusthash import zoo
from robusthash.errors import UserError
from robusthash.records import DatasetRef, ModelRecord


def test_every_shipped_checkpoint_reads_as_a_record_and_writes_back_unchanged():
    """The zoo's files were written by earlier versions: their meta round-trips through ModelRecord."""
    for entry in zoo.list_models():
        ckpt = zoo.checkpoint(entry.name)
        raw = ckpt.state["meta"]
        written = ckpt.record.to_meta()
        assert {k: v for k, v in written.items() if v is not None} == {k: v for k, v in raw.items() if v is not None}
        assert ckpt.record.data_ref == DatasetRef.of(raw["dataset"]) and ckpt.record.loss == raw["train"]["loss"]
        assert (ckpt.record.kind == "defended") == (ckpt.record.base_fingerprint is not None)


def test_unknown_keys_survive_and_damage_is_named():
    meta = {"kind": "trained", "model": {"in_channels": 1}, "train": {"loss": "dph"}, "dataset": {"name": "x"},
            "later": {"a": 1}}  # fmt: skip
    record = ModelRecord.from_meta(meta)
    assert record.extra == {"later": {"a": 1}} and record.to_meta()["later"] == {"a": 1} and record.history == []
    for broken, missing in (({**meta, "kind": "odd"}, "meta.kind"), ({**meta, "train": {}}, "meta.train.loss"),
                            ({k: v for k, v in meta.items() if k != "model"}, "meta.model"), (3, "meta")):  # fmt: skip
        with pytest.raises(UserError, match=f"damaged robusthash checkpoint \\(missing {missing}"):
            ModelRecord.from_meta(broken, "m.pt")


def test_a_dataset_reference_ignores_what_it_does_not_name_and_reads_defaults():
    ref = DatasetRef.of({"name": "toy", "num_classes": 3, "database": "all"})
    assert ref == DatasetRef("toy", None, "all", 0, None) and ref.options()["database"] == "all"
    with pytest.raises(UserError, match="database must be a positive integer or 'all'"):
        DatasetRef(database=0).validate()
