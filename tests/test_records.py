"""The typed records: a checkpoint's meta and a dataset reference read and written through one class each."""

from __future__ import annotations

import pytest

from robusthash.app import zoo
from robusthash.errors import UserError
from robusthash.records import DatasetRef, ModelRecord


def test_every_shipped_checkpoint_reads_as_a_record_and_writes_back_unchanged():
    """The zoo's files were written by earlier versions: their meta round-trips through ModelRecord."""
    for entry in zoo.list_models():
        ckpt = zoo.checkpoint(entry.name)
        raw = ckpt.state["meta"]
        written = ckpt.record.to_meta()
        assert {k: v for k, v in written.items() if v is not None} == {
            k: v for k, v in raw.items() if v is not None
        }
        assert (
            ckpt.record.data_ref == DatasetRef.of(raw["dataset"]) and ckpt.record.loss == raw["train"]["loss"]
        )
        assert (ckpt.record.kind == "defended") == (ckpt.record.base_fingerprint is not None)


def test_unknown_keys_survive_and_damage_is_named():
    meta = {
        "kind": "trained",
        "model": {"in_channels": 1},
        "train": {"loss": "dph"},
        "dataset": {"name": "x"},
        "later": {"a": 1},
    }
    record = ModelRecord.from_meta(meta)
    assert (
        record.extra == {"later": {"a": 1}} and record.to_meta()["later"] == {"a": 1} and record.history == []
    )
    for broken, missing in (
        ({**meta, "kind": "odd"}, "meta.kind"),
        ({**meta, "train": {}}, "meta.train.loss"),
        ({k: v for k, v in meta.items() if k != "model"}, "meta.model"),
        (3, "meta"),
    ):
        with pytest.raises(UserError, match=f"damaged robusthash checkpoint \\(missing {missing}"):
            ModelRecord.from_meta(broken, "m.pt")


def test_a_dataset_reference_ignores_what_it_does_not_name_and_reads_defaults():
    ref = DatasetRef.of({"name": "toy", "num_classes": 3, "database": "all"})
    assert ref == DatasetRef("toy", None, "all", 0, None) and ref.options()["database"] == "all"
    with pytest.raises(UserError, match="database must be a positive integer or 'all'"):
        DatasetRef(database=0).validate()


def test_given_dataset_fields_replace_the_recorded_ones_and_unknown_fields_are_named():
    ref = DatasetRef(database=500, split_seed=3)
    assert ref.with_given(database=None, split_seed=1) == DatasetRef(database=500, split_seed=1)
    with pytest.raises(UserError, match="unknown dataset field.*databse; valid: data_dir, database"):
        ref.with_given(databse=10)


def test_any_model_loads_with_its_recorded_data_from_the_library(tmp_path, monkeypatch):
    """The command line's loading is the library's: a checkpoint with its own split (a given field replacing the
    recorded one), and a brought state dict with a record of its own."""
    import torch

    from robusthash.loading import ModelSource, load_with_data
    from tests.test_training import toy_data

    data = toy_data(n_per_class=4)
    seen: list[DatasetRef] = []
    monkeypatch.setattr(DatasetRef, "load", lambda self: seen.append(self) or data)
    path = zoo.checkpoint("fashion-mnist-dph-32").path
    with pytest.raises(UserError, match="classes"):  # the toy data has 3 classes, the zoo model 10
        load_with_data(ModelSource(path), dataset={"database": 77})
    assert seen[-1] == DatasetRef.of(zoo.checkpoint("fashion-mnist-dph-32").record.dataset).with_given(
        database=77
    )
    module = tmp_path / "net.py"
    shape = tuple(data.image_shape)
    module.write_text(
        "import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), "
        f"torch.nn.Linear({shape[0] * shape[1] * shape[2]}, 6))\n"
    )
    weights = tmp_path / "w.pt"
    torch.save({"1.weight": torch.zeros(6, shape[0] * shape[1] * shape[2]), "1.bias": torch.ones(6)}, weights)
    loaded = load_with_data(ModelSource(weights, model_def=f"{module}:make", loss="dpsh"))
    assert loaded.model.bits == 6 and not loaded.model.training and loaded.data is data
    assert loaded.checkpoint.record.loss == "dpsh" and loaded.dataset == DatasetRef()
    assert torch.equal(loaded.model(torch.zeros(1, *shape)).sign(), torch.ones(1, 6))
    with pytest.raises(UserError, match="--backbone needs --bits"):
        load_with_data(ModelSource(weights, backbone="small_cnn"))


def test_schema_1_row_files_are_named_by_their_script_without_the_library_knowing_the_scripts(tmp_path):
    from robusthash.results import BenchmarkRows, from_json

    doc = from_json(
        {"command": "python benchmarks/bench_training.py --markdown docs/t.md", "rows": [{"a": 1}]}
    )
    assert isinstance(doc, BenchmarkRows) and doc.benchmark == "training" and doc.rows == [{"a": 1}]
    assert from_json({"command": "bench_new_thing.py", "rows": []}).benchmark == "new_thing"
    with pytest.raises(UserError, match="is not a robusthash results file"):
        from_json({"command": "python mybench_x.py", "rows": []})
