"""The command line: help everywhere, one clear line and exit code 2 for user mistakes, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robusthash.app.cli import build_parser, main
from tests.conftest import needs_fashion_mnist


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: robusthash" in capsys.readouterr().out


def test_datasets_lists_sources(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "fashion-mosaic" in out and "deephash-list" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'; valid: "),
        (["train", "--loss", "dsh", "--epochs", "1"], "unknown loss 'dsh'; valid: "),
        (["train", "--backbone", "vgg99", "--epochs", "1"], "unknown backbone 'vgg99'; valid: "),
        (["train", "--data-dir", "/nonexistent"], "dataset-fashion-mnist"),
        (["evaluate", "--model", "/nonexistent.pt"], "checkpoint /nonexistent.pt not found"),
        (["train", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x.pt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robusthash: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cudnn_benchmark_flag_holds_for_the_command_and_is_restored(monkeypatch, tmp_path, capsys):
    import torch

    import robusthash.runtime as runtime

    seen: list[bool] = []
    real = runtime.cudnn_autotuning

    def recording(enabled: bool):
        seen.append(enabled)
        return real(enabled)

    monkeypatch.setattr(runtime, "cudnn_autotuning", recording)
    before = torch.backends.cudnn.benchmark
    for flag in ([], ["--cudnn-benchmark"]):
        assert main(["evaluate", "--model", str(tmp_path / "none.pt"), "--quiet", *flag]) == 2
    assert seen == [False, True]
    assert torch.backends.cudnn.benchmark == before
    with runtime.cudnn_autotuning(True):
        assert torch.backends.cudnn.benchmark
        with runtime.cudnn_autotuning(False):  # never turns it off inside
            assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before


def test_results_environment_records_cudnn_autotuning_on_cuda(monkeypatch):
    import torch

    import robusthash.runtime as runtime

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "A GPU")
    assert "cudnn_benchmark" not in runtime.environment("cpu")
    assert runtime.environment("cuda")["cudnn_benchmark"] is torch.backends.cudnn.benchmark
    with runtime.cudnn_autotuning(True):
        assert runtime.environment("cuda")["cudnn_benchmark"] is True


def test_bad_bits_is_a_one_line_error(capsys):
    assert main(["train", "--bits", "0"]) == 2
    assert "bits must be an integer in [1, 4096]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--bits", "ten"])
    assert exc.value.code == 2 and "expected an integer" in capsys.readouterr().err


def test_every_config_field_is_a_flag():
    from dataclasses import fields

    from robusthash.defenses import DefenseConfig
    from robusthash.robustness import AttackSuite
    from robusthash.training import TrainConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command, cls in (("train", TrainConfig), ("attack", AttackSuite), ("defend", DefenseConfig)):
        dests = {a.dest for a in sub[command]._actions}
        assert {f.name for f in fields(cls)} <= dests, command


def test_corrupt_checkpoint_from_the_console_script(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "robusthash.app.cli", "evaluate", "--model", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "not a readable robusthash checkpoint" in proc.stderr and "Traceback" not in proc.stderr


@needs_fashion_mnist
@pytest.mark.slow
def test_train_then_evaluate_writes_results(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert (
        main(["train", "--epochs", "1", "--bits", "16", "--out", str(ckpt), "--quiet", "--device", "cpu"])
        == 0
    )
    assert "clean mAP@1000" in capsys.readouterr().out
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(ckpt), "--out", str(out), "--quiet", "--topk", "500"]) == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "evaluation" and doc["seed"] == 0
    assert doc["environment"]["torch"] and doc["environment"]["device"] == "cpu"
    assert 0.3 < doc["clean"]["map"] <= 1 and doc["clean"]["topk"] == 500 and len(doc["clean"]["ap"]) == 1000
    assert doc["model"]["model"]["bits"] == 16
    streamed = tmp_path / "streamed.json"
    argv = [
        "evaluate",
        "--model",
        str(ckpt),
        "--out",
        str(streamed),
        "--quiet",
        "--topk",
        "500",
        "--store",
        str(tmp_path / "store"),
        "--chunk",
        "3000",
    ]
    assert main(argv) == 0
    assert json.loads(streamed.read_text())["clean"]["ap"] == doc["clean"]["ap"]  # the same numbers, streamed
    assert (tmp_path / "store" / "codes.npy").stat().st_size < 10_000 * 8 + 1024  # one uint64 per 16-bit code
    assert main(argv) == 0  # reopens the finished store


def test_help_does_not_import_torch():
    """``robusthash --help`` builds no command's arguments and imports no torch (it answers in well under 1 s)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom robusthash.app.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False") and "attack" in out and "demo" in out, out
