"""Careless input: one line on stderr, exit 2, no traceback (the part of the audit this version covers)."""

from __future__ import annotations

import os
import re
import stat

import pytest
import torch

from robusthash.app.cli import main
from robusthash.records import DatasetRef
from robusthash.runtime import atomic_write_json


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--seed", str(2**70)], "seed must be an integer in [0, 2^63 - 1]"),
        (["train", "--lr", "nan"], "lr must be a finite number"),
        (["train", "--lr", "inf"], "lr must be a finite number"),
        (["train", "--batch-size", "1"], "batch size must be >= 2"),
        (["train", "--bits", "100000"], "bits must be an integer in [1, 4096]"),
        (["train", "--split-seed", "-1"], "--split-seed must be an integer"),
        (["train", "--image-size", "0"], "--image-size must be a positive number"),
        (["train", "--device", "mps"], "device 'mps' is not supported; valid: auto, cpu, cuda"),
        (["train", "--device", "meta"], "device 'meta' is not supported"),
        (["attack", "--model", "x.pt", "--topk", "-5"], "topk must be >= 1"),
        (["attack", "--model", "x.pt", "--eps", "nan"], "eps must lie in [0, 1]"),
        (["attack", "--model", "x.pt", "--attack", "fgsm"], "unknown attack 'fgsm'; valid: "),
        (
            ["attack", "--model", "x.pt", "--protocol", "pgd7"],
            "unknown protocol 'pgd7'; valid: default, pgd20",
        ),
        (["defend", "--model", "x.pt", "--lr", "-1"], "learning rate must be > 0"),
        (["defend", "--model", "x.pt", "--method-options", '{"lam": NaN}'], "lam must be a finite number"),
        (
            ["defend", "--model", "x.pt", "--method", "atrdh", "--method-options", '{"lam": 2}'],
            "defence atrdh takes no method options, got lam",
        ),
        (["defend", "--model", "x.pt", "--method", "madry"], "unknown defence 'madry'; valid: "),
        (["evaluate", "--model", "x.pt", "--topk", "-5"], "--topk must be >= 0"),
    ],
)
def test_bad_values_are_one_line_errors(argv, message, capsys, tmp_path):
    argv = [a if a != "x.pt" else str(tmp_path / "x.pt") for a in argv]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robusthash: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_checkpoints_with_objects_or_missing_fields_are_refused_in_one_line(tmp_path, capsys):
    from fractions import Fraction  # any object outside torch's weights-only allow-list

    torch.save({"format": "robusthash-checkpoint/1", "meta": Fraction(1, 3)}, tmp_path / "evil.pt")
    torch.save({"format": "robusthash-checkpoint/1", "meta": {"kind": "trained"}}, tmp_path / "partial.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name, message in (
        ("evil.pt", "holds objects robusthash will not load"),
        ("partial.pt", "damaged robusthash checkpoint (missing model)"),
        ("tensor.pt", "is not a robusthash checkpoint"),
        ("tensor.pt", "pass --model-def path/to/file.py:factory"),
    ):
        assert main(["evaluate", "--model", str(tmp_path / name), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "weights_only=False" not in err, err


def test_results_keep_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json({"a": 1}, tmp_path / "r.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_report_refuses_a_checkpoint_and_rows_that_are_not_a_list(tmp_path, capsys):
    torch.save({"a": torch.zeros(1)}, tmp_path / "m.pt")
    (tmp_path / "rows.json").write_text('{"schema": "robusthash-results/2", "kind": "benchmark", "rows": 3}')
    (tmp_path / "old.json").write_text('{"command": "python benchmarks/bench_attacks.py", "rows": {"a": 1}}')
    for name, message in (
        ("m.pt", "not UTF-8 text"),
        ("rows.json", "'rows' must be a list"),
        ("old.json", "'rows' must be a list"),
    ):
        assert main(["report", str(tmp_path / name), "--out", str(tmp_path / "rep")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_pretrained_weights_that_are_a_bare_tensor(tmp_path):
    from robusthash.errors import UserError
    from robusthash.models import create_model

    torch.save(torch.zeros(3), tmp_path / "w.pt")
    with pytest.raises(UserError, match=r"holds a Tensor, not a pretrained state dict"):
        create_model("small_cnn", 8, 1, pretrained=tmp_path / "w.pt")


def test_an_image_of_the_wrong_channel_count_is_named(toy):
    from robusthash.attacks import create_attack
    from robusthash.errors import UserError

    _, model = toy
    with pytest.raises(UserError, match="takes 1-channel images, got 3"):
        create_attack("hag", model, steps=1)(torch.rand(2, 3, 12, 12), torch.eye(3)[:2])


def test_a_checkpoint_of_other_sized_images_is_refused():
    from robusthash.checkpoint import check_matches_data
    from robusthash.errors import UserError
    from tests.test_training import toy_data

    data = toy_data(n_per_class=2)  # 1 x 12 x 12
    from robusthash.records import ModelRecord

    record = ModelRecord(
        "trained",
        {"in_channels": 1},
        {"loss": "dph"},
        {"name": "toy", "num_classes": 3, "image_shape": [1, 28, 28]},
    )
    with pytest.raises(UserError, match=r"images of shape \(1, 28, 28\), but toy has \(1, 12, 12\)"):
        check_matches_data(record, data, "m.pt")


def test_a_second_writer_of_one_output_is_refused_and_stale_temporaries_are_removed(tmp_path):
    from robusthash.errors import UserError
    from robusthash.runtime import exclusive_output
    from robusthash.training import TrainConfig, train
    from tests.test_training import toy_data

    out = tmp_path / "m.pt"
    stale = tmp_path / ".m.pt.abc123.tmp"
    stale.write_text("left by a killed run")
    with exclusive_output(out):
        assert not stale.exists()
        with pytest.raises(UserError, match="another robusthash run is writing"):
            train(toy_data(n_per_class=4), TrainConfig(bits=4, epochs=1, batch_size=4), out, quiet=True)
    train(
        toy_data(n_per_class=4), TrainConfig(bits=4, epochs=1, batch_size=4), out, quiet=True
    )  # lock released


def _parent_is_a_file(folder):
    (folder / "parent").write_text("x")
    return folder / "parent" / "m.pt"


def _out_is_a_folder(folder):
    (folder / "dir.pt").mkdir()
    return folder / "dir.pt"


@pytest.mark.parametrize(
    ("make", "message"),
    [(_parent_is_a_file, "is a file, not a folder"), (_out_is_a_folder, "it is a folder; give a file name")],
)
def test_an_unwritable_output_is_named_before_any_work(make, message, tmp_path, capsys):
    out = make(tmp_path)
    assert main(["train", "--out", str(out), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_resume_refuses_another_split_seed_naming_it(tmp_path):
    from robusthash.errors import UserError
    from robusthash.training import TrainConfig, train
    from tests.test_training import toy_data

    data = toy_data(n_per_class=4)
    config = TrainConfig(bits=4, epochs=1, batch_size=4)
    train(data, config, tmp_path / "m.pt", dataset_options={"split_seed": 0}, quiet=True)
    with pytest.raises(UserError, match=r"other settings \(data.split_seed\)"):
        train(data, config, tmp_path / "m.pt", dataset_options={"split_seed": 7}, quiet=True)


def test_an_impossible_mosaic_database_is_refused_before_any_allocation(capsys):
    from tests.conftest import _have_fashion_mnist

    if not _have_fashion_mnist():
        pytest.skip("Fashion-MNIST not installed")
    assert main(["train", "--dataset", "fashion-mosaic", "--database", "100000000", "--quiet"]) == 2
    assert "up to 1000000" in capsys.readouterr().err


def test_a_last_batch_of_one_item_is_dropped():
    from robusthash.training import TrainConfig, train
    from tests.test_training import toy_data

    data = toy_data(n_per_class=11)  # 33 training images at batch 32: the last batch holds one
    result = train(data, TrainConfig(bits=4, epochs=1, batch_size=32), quiet=True)
    assert len(result.history) == 1 and result.history[0]["loss"] == result.history[0]["loss"]  # finite


def test_a_failed_write_is_one_line_and_keeps_what_was_there(tmp_path, monkeypatch):
    from robusthash.errors import UserError
    from robusthash.runtime import atomic_torch_save, atomic_write_json

    atomic_write_json({"v": 1}, tmp_path / "r.json")

    def disk_full(obj, f, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="cannot write .*m.pt: No space left on device"):
        atomic_torch_save({"a": 1}, tmp_path / "m.pt")
    monkeypatch.setattr("pathlib.Path.write_text", lambda *a, **k: disk_full(None, None))
    with pytest.raises(UserError, match="No space left on device"):
        atomic_write_json({"v": 2}, tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text().strip().endswith("}") and '"v": 1' in (
        tmp_path / "r.json"
    ).read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_checkpoint_kinds_and_newer_formats_are_refused(tmp_path):
    from robusthash.checkpoint import read_checkpoint
    from robusthash.errors import UserError
    from robusthash.training import TrainConfig, train
    from tests.test_training import toy_data

    torch.save({"format": "robusthash-checkpoint/9", "meta": {}, "model": {}}, tmp_path / "new.pt")
    with pytest.raises(UserError, match="another robusthash version"):
        read_checkpoint(tmp_path / "new.pt")
    data = toy_data(n_per_class=4)
    train(data, TrainConfig(bits=4, epochs=1, batch_size=4), tmp_path / "m.pt", quiet=True)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    # a defended checkpoint of the same recipe as a clean-training target
    payload["meta"]["kind"] = "defended"
    torch.save(payload, tmp_path / "d.pt")
    with pytest.raises(UserError, match=r"other settings \(kind\)"):
        train(data, TrainConfig(bits=4, epochs=1, batch_size=4), tmp_path / "d.pt", quiet=True)


def test_metrics_leave_torchs_thread_count_alone():
    from robusthash import metrics

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codes = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        metrics.mean_average_precision(codes, codes, torch.eye(2), torch.eye(2))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_python_api_mistakes_are_clear(toy):
    from robusthash.attacks import create_attack
    from robusthash.errors import UserError

    data, model = toy
    x, y, _ = data.query.batch(torch.arange(2))
    with pytest.raises(UserError, match="floating point"):
        create_attack("hag", model, steps=1)((x * 255).to(torch.uint8), y)
    with pytest.raises(UserError, match="optimizer must be 'adam' or 'pgd'"):
        create_attack("sdha", model, optimizer="lbfgs")
    with pytest.raises(UserError, match="batch_size must be a positive integer"):
        create_attack("pga", model, batch_size=0)


def test_a_failing_run_leaves_earlier_results_untouched(tmp_path, capsys):
    out = tmp_path / "attacks"
    out.mkdir()
    (out / "attack_results.json").write_text('{"earlier": true}')
    assert main(["attack", "--model", str(tmp_path / "missing.pt"), "--out", str(out), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
    assert (out / "attack_results.json").read_text() == '{"earlier": true}'
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".lock")) == ["attack_results.json"]


def test_a_defended_checkpoint_is_not_a_base_for_defence(tmp_path, capsys, monkeypatch):
    from robusthash.training import TrainConfig, train
    from tests.test_training import toy_data

    data = toy_data(n_per_class=4)
    monkeypatch.setattr(DatasetRef, "load", lambda self: data)
    train(data, TrainConfig(bits=4, epochs=1, batch_size=4), tmp_path / "m.pt", quiet=True)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["meta"]["kind"] = "defended"
    torch.save(payload, tmp_path / "d.pt")
    assert main(["defend", "--model", str(tmp_path / "d.pt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already a defended model; start from the clean checkpoint" in err and err.count("\n") == 1


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from robusthash import training
    from robusthash.checkpoint import read_checkpoint
    from robusthash.errors import UserError
    from tests.test_training import toy_data

    data = toy_data(n_per_class=4)
    real = training.CleanTraining.batch_loss

    def nan_in_epoch_two(self, x, y, idx, step):
        terms = real(self, x, y, idx, step)
        return {"loss": terms["loss"] * float("nan")} if step >= 3 else terms

    monkeypatch.setattr(training.CleanTraining, "batch_loss", nan_in_epoch_two)
    with pytest.raises(UserError, match="the training loss became nan in epoch 2"):
        training.train(
            data, training.TrainConfig(bits=4, epochs=2, batch_size=4), tmp_path / "m.pt", quiet=True
        )
    assert read_checkpoint(tmp_path / "m.pt").state["epoch"] == 1


def test_data_and_lock_mistakes_through_the_command_line(tmp_path, capsys):
    from PIL import Image

    from robusthash.runtime import exclusive_output

    (tmp_path / "img").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "img" / "a.png")
    (tmp_path / "train.txt").write_bytes(b"img/a.png 1 0\n")
    (tmp_path / "test.txt").write_bytes(b"img/\xff.png 1 0\n")
    (tmp_path / "database.txt").write_text("img/a.png 0 1\n")
    argv = [
        "train",
        "--dataset",
        "deephash-list",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "m.pt"),
    ]
    assert main([*argv, "--quiet"]) == 2
    assert "test.txt:1: not UTF-8 text" in capsys.readouterr().err
    (tmp_path / "test.txt").write_text("img/my photo.png 1 0\n")
    assert main([*argv, "--quiet"]) == 2
    assert "cannot hold spaces in paths" in capsys.readouterr().err
    (tmp_path / "test.txt").write_text("img/a.png 1 0\n")
    with exclusive_output(tmp_path / "m.pt"):
        assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "another robusthash run is writing" in err and err.count("\n") == 1
    torch.save(
        {
            "format": "robusthash-checkpoint/1",
            "model": {},
            "meta": {"kind": "trained", "model": {}, "train": {}, "dataset": {}},
        },
        tmp_path / "noloss.pt",
    )
    assert main(["defend", "--model", str(tmp_path / "noloss.pt"), "--quiet"]) == 2
    assert "missing meta.train.loss" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('seed = "abc"', "seed: expected an integer, got 'abc'"),
        ("dataset = 5", "dataset: expected a table, got 5"),
        ("train = [1, 2]", "train: expected a table, got [1, 2]"),
        ("defend = 3", "defend: expected a table, got 3"),
        ('model = "foo"', "model: expected a table, got 'foo'"),
        ("name = 3", "name: expected a string (or left out), got 3"),
        ("seed = -1", "seed must be an integer in [0, 2^63 - 1]"),
        ("[defend]\nmethods = 5", "[defend] methods: expected a list of strings, got 5"),
        ('[defend]\nmethods = ["madry"]', "[defend] methods: unknown defence 'madry'; valid: "),
        ("[model]\ncheckpoint = 5", "[model] checkpoint: expected a string (or left out), got 5"),
        ("[model]\nweights = 'x.pt'", "[model]: unknown setting(s) weights; valid: checkpoint"),
        ("[dataset]\ndata_dir = 5", "[dataset] data_dir: expected a string (or left out), got 5"),
        ('[dataset]\nimage_size = "8"', "[dataset] image_size: expected an integer (or left out), got '8'"),
        ("[dataset]\ndatabase = 0", "[dataset] database must be a positive integer or 'all', got 0"),
        ("[train]\nepochs = 2.5", "[train] epochs: expected an integer, got 2.5"),
        ("[train]\nepochs = 0", "[train]: epochs must be >= 1"),
        ('[train]\naugment = "yes"', "[train] augment: expected true or false, got 'yes'"),
        ('[attack]\nqueries = "4"', "[attack] queries: expected an integer (or left out), got '4'"),
        ('[attack]\nsteps = "3"', "[attack] steps: expected an integer (or left out), got '3'"),
        ('[attack]\ntopk = "x"', "[attack] topk: expected an integer (or left out), got 'x'"),
        ("[attack]\nattack_options = 5", "[attack] attack_options: expected a table, got 5"),
        ("[attack]\nattack_options = {pga = 5}", "[attack] attack_options['pga']: expected a table"),
        ('[attack]\nattacks = "pga"', "[attack] attacks: expected a list of strings, got 'pga'"),
        ('[attack]\neps = "8"', "[attack] eps: expected a number, got '8'"),
    ],
)
def test_experiment_files_are_typed_before_any_work(text, message, tmp_path, capsys):
    """Every value of an experiment file is checked against its field's type and range, naming table and key."""
    path = tmp_path / "exp.toml"
    path.write_text(text + "\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robusthash: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before any work


def test_integer_values_are_accepted_where_numbers_are_meant(tmp_path):
    from robusthash.app.experiment import load_experiment

    path = tmp_path / "exp.toml"
    path.write_text('[train]\nlr = 1\n[attack]\neps = 0\nattacks = ["pga"]\n')
    exp = load_experiment(path)
    assert exp.train.lr == 1.0 and isinstance(exp.train.lr, float) and exp.attack.attacks == ["pga"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "def make():\n    raise ValueError('no weights\\nsecond line')\n",
            "make() failed: ValueError: no weights",
        ),
        ("def make():\n    raise SystemExit(0)\n", "make() failed: it called exit(0)"),
        ("import sys\nsys.exit(3)\n", "failed to import: it called exit(3)"),
        ("raise ImportError('needs timm')\n", "failed to import: ImportError: needs timm"),
        ("make = 5\n", "has no callable 'make'"),
        ("def make():\n    return 5\n", "make() returned int, not a torch.nn.Module"),
    ],
)
def test_a_users_model_file_runs_inside_a_guard(source, message, tmp_path):
    """Whatever a --model-def file or its factory does (raise, exit 0, exit 3), it ends as one UserError."""
    from robusthash.errors import UserError
    from robusthash.models import load_model_def

    path = tmp_path / "user_model.py"
    path.write_text(source)
    with pytest.raises(UserError) as info:
        load_model_def(f"{path}:make")
    assert message in str(info.value) and "\n" not in str(info.value), info.value


def test_a_factory_that_exits_zero_is_exit_2_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "user_model.py"
    path.write_text("def make():\n    raise SystemExit(0)\n")
    torch.save({}, tmp_path / "x.pt")  # the bare state dict of the user's module
    argv = ["attack", "--model", str(tmp_path / "x.pt"), "--model-def", f"{path}:make", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "it called exit(0)" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([10**6], "query indices must lie in [0, 30)"),
        ([-1], "query indices must lie in [0, 30)"),
        ([1, 1], "query indices must be distinct"),
        ([[1, 2]], "query indices must be a 1-D list of integers"),
        ([0.5], "query indices must be a 1-D list of integers"),
    ],
)
def test_bad_query_indices_are_named(indices, message, toy):
    from robusthash.errors import UserError
    from robusthash.robustness import AttackSuite, evaluate_attacks

    data, model = toy
    with pytest.raises(UserError, match=re.escape(message)):
        evaluate_attacks(
            model, data, AttackSuite(attacks=["pga"], steps=1), quiet=True, indices=torch.tensor(indices)
        )


def test_a_good_model_on_a_few_queries_of_one_class_is_not_called_constant(toy):
    """The constant-model check probes the database's classes too: two queries of one class that share a code
    are no evidence of a constant model."""
    from robusthash.evaluation import encode_images
    from robusthash.robustness import AttackSuite, evaluate_attacks

    data, model = toy
    codes = encode_images(model, data.query.batch(torch.arange(len(data.query)))[0])
    same = [
        (i, j) for i in range(len(codes)) for j in range(i + 1, len(codes)) if torch.equal(codes[i], codes[j])
    ]
    assert same, "the toy model gives no two queries one code: the case is not built"
    run = evaluate_attacks(
        model, data, AttackSuite(attacks=["pga"], steps=1), quiet=True, indices=torch.tensor(same[0])
    )
    assert len(run.query_indices) == 2


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("weights", "is missing or damaged; reinstall"),
        ("manifest-json", "the zoo manifest"),
        ("manifest-entry", "unknown setting(s) owner"),
        ("manifest-escape", "names a file outside the zoo ('../escape.pt')"),
        ("manifest-type", "clean_map: expected a number, got 'high'"),
    ],
)
def test_a_tampered_zoo_is_refused_in_one_line(tamper, message, tmp_path, monkeypatch):
    """A zoo checkpoint whose bytes changed, or a manifest that is broken, names a file outside the zoo or has
    fields of the wrong type: one UserError line, nothing loaded."""
    import json
    import shutil

    from robusthash.app import zoo
    from robusthash.errors import UserError

    shutil.copytree(zoo.ZOO_DIR, tmp_path / "zoo", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    manifest = tmp_path / "zoo" / "manifest.json"
    doc = json.loads(manifest.read_text())
    entry = doc["models"][0]
    if tamper == "weights":
        data = bytearray((tmp_path / "zoo" / entry["file"]).read_bytes())
        data[-100] ^= 1
        (tmp_path / "zoo" / entry["file"]).write_bytes(bytes(data))
    elif tamper == "manifest-json":
        manifest.write_text("{not json")
    else:
        entry.update(
            {
                "manifest-entry": {"owner": "x"},
                "manifest-escape": {"file": "../escape.pt"},
                "manifest-type": {"clean_map": "high"},
            }[tamper]
        )
        manifest.write_text(json.dumps(doc))
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setattr(zoo, "MANIFEST", manifest)
    zoo.list_models.cache_clear()
    try:
        with pytest.raises(UserError, match=re.escape(message)) as info:
            zoo.load_model(entry["name"])
        assert "\n" not in str(info.value)
    finally:
        zoo.list_models.cache_clear()


def test_threads_are_a_positive_count_or_auto(tmp_path, capsys):
    from robusthash.errors import UserError
    from robusthash.runtime import idle_cores, set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert 1 <= set_threads("auto") == torch.get_num_threads() <= len(os.sched_getaffinity(0))
        assert idle_cores() >= 1
        for bad in (0, -2, "4", True, 1.5):
            with pytest.raises(UserError, match="threads must be a positive integer or 'auto'"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["train", "--threads", "0"])
    assert "expected a positive integer or auto, got '0'" in capsys.readouterr().err
    path = tmp_path / "exp.toml"
    path.write_text("threads = 0\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "threads: expected a positive integer or 'auto', got 0" in capsys.readouterr().err
    torch.set_num_threads(1)
    try:  # a command run in-process leaves the caller's thread count as it found it
        assert main(["evaluate", "--model", str(tmp_path / "none.pt"), "--threads", "2", "--quiet"]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_checkpoint_saved_twice_is_the_same_bytes(tmp_path):
    """The zoo checks files by SHA-256: saving the same object again (to any path) must give the same bytes."""
    from robusthash.runtime import atomic_torch_save

    obj = {"model": {"w": torch.arange(6.0).view(2, 3)}, "meta": {"kind": "trained"}}
    atomic_torch_save(obj, tmp_path / "a.pt")
    atomic_torch_save(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
