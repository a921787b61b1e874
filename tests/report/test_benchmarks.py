"""The benchmark views: tables and checks computed from synthetic rows whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from views import (  # noqa: E402
    attack_benchmark_markdown,
    defense_benchmark_markdown,
    training_markdown,
    universality_markdown,
)

ATTACKS = ["clean", "p2p", "dhta", "hag", "sdha", "pga", "robust"]


def _universality_rows() -> list[dict]:
    values = {
        ("dpsh", "none"): [0.80, 0.60, 0.58, 0.30, 0.35, 0.33, 0.28],  # HAG beats PgA here
        ("dpsh", "atrdh"): [0.79, 0.70, 0.69, 0.60, 0.55, 0.52, 0.50],
        ("dpsh", "cgat"): [0.78, 0.75, 0.74, 0.70, 0.54, 0.65, 0.53],  # below ATRDH under SDHA
    }
    rows = [
        {"method": m, "backbone": "small_cnn", "defense": d, "attack": a, "map": v}
        for (m, d), vs in values.items()
        for a, v in zip(ATTACKS, vs, strict=True)
    ]
    rows += [
        {
            "method": "dph",
            "backbone": "efficientnet_lite0",
            "defense": "none",
            "attack": "clean",
            "map": 0.91,
        },
        {"method": "dph", "backbone": "efficientnet_lite0", "defense": "none", "attack": "pga", "map": 0.41},
    ]
    return rows


def test_universality_table_and_checks() -> None:
    text = universality_markdown(_universality_rows())
    assert "| DPSH | undefended | 0.8000 | 0.6000 |" in text
    assert "|  | CgAT | 0.7800 | 0.7500 |" in text
    assert "DPSH: PgA lowest on the undefended model except HAG" in text
    assert "CgAT above ATRDH under all attacks but SDHA" in text
    assert "efficientnet_lite0 (ImageNet, 64 px)" in text and "0.4100" in text


def test_training_table_lists_map_and_seconds() -> None:
    rows = [
        {"dataset": "fashion-mnist", "bits": 16, "loss": "dph", "map": 0.8412, "train_seconds": 61.2},
        {"dataset": "fashion-mnist", "bits": 32, "loss": "dph", "map": 0.8494, "train_seconds": 70.4},
        {"dataset": "fashion-mnist", "bits": 32, "loss": "csq", "map": 0.8539, "train_seconds": 66.0},
    ]
    text = training_markdown(rows)
    assert "fashion-mnist 16 bits | fashion-mnist 32 bits" in text
    csq_line = next(line for line in text.splitlines() if line.startswith("| CSQ") and "0.85" in line)
    assert csq_line.split("|")[2].strip() == ""  # no 16-bit CSQ run: an empty cell, not a made-up number
    assert "0.8539" in csq_line
    assert "| DPH | 61 | 70 |" in text


def test_defense_checks_compute_gaps_and_lift(tmp_path) -> None:
    base = {"dataset": "fashion-mnist", "bits": 32, "loss": "dpsh"}
    maps = {
        "none": [0.80, 0.60, 0.58, 0.30, 0.28, 0.25, 0.22],
        "atrdh": [0.79, 0.70, 0.69, 0.60, 0.55, 0.52, 0.50],
        "cgat": [0.77, 0.75, 0.74, 0.70, 0.66, 0.61, 0.60],
    }
    rows = [
        {**base, "defense": d, "lam": None if d == "none" else 1.0, "attack": a, "map": v}
        for d, vs in maps.items()
        for a, v in zip(ATTACKS, vs, strict=True)
    ]
    rows += [
        {**base, "defense": "cgat", "lam": lam, "attack": a, "map": 0.5}
        for lam in (0.5, 2.0)
        for a in ATTACKS
    ]
    text = defense_benchmark_markdown(rows, tmp_path / "figures")
    assert "CgAT above ATRDH under 6 of 6 attack columns" in text
    assert "(-2.0 points)" in text
    assert "lifts mAP by +36.0 points" in text
    assert "## Fig. 4" in text and (tmp_path / "figures" / "defenses-lambda.png").stat().st_size > 0


def test_defense_tables_add_prosgan_beside_and_the_nag_transfer_table(tmp_path) -> None:
    base = {"dataset": "fashion-mnist", "bits": 16, "loss": "dpsh"}
    rows = [
        {**base, "defense": d, "lam": None if d == "none" else 1.0, "attack": a, "map": 0.5}
        for d in ("none", "atrdh", "cgat")
        for a in ATTACKS
    ]
    rows.append(
        {**base, "defense": "cgat", "lam": 1.0, "attack": "prosgan", "map": 0.4, "tmap": 0.7, "linf": 0.5}
    )
    rows.append(
        {
            **base,
            "defense": "atrdh",
            "lam": 1.0,
            "attack": "prosgan",
            "map": 0.3,
            "tmap": 0.8,
            "linf": 0.6,
            "device": "NVIDIA H200",
        }
    )
    nag = {
        "none": (0.30, 0.40),
        "atrdh": (0.60, 0.70),
        "cgat": (0.65, 0.66),
    }  # mAP from resnet18, from resnet34
    for defense, maps in nag.items():
        for surrogate, value in zip(("resnet18", "resnet34"), maps, strict=True):
            rows.append(
                {
                    **base,
                    "defense": defense,
                    "lam": None if defense == "none" else 1.0,
                    "protocol": "nag",
                    "attack": f"nag@{surrogate}",
                    "budget": 8,
                    "surrogate": surrogate,
                    "map": value,
                    "tmap": 0.1,
                    "clean_map": 0.8,
                    "surrogate_clean_map": 0.75,
                    "surrogate_tmap": 0.9,
                    **({"device": "NVIDIA H200"} if surrogate == "resnet34" else {}),
                }
            )
    text = defense_benchmark_markdown(rows, tmp_path / "figures")
    assert "ProS-GAN t-mAP (mean L-inf) ATRDH 0.8000 (153/255), CgAT 0.7000 (128/255)" in text
    assert "ProS-GAN generators trained on NVIDIA H200 (ATRDH); on this machine's CPU (CgAT)" in text
    assert "| CgAT | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.4000 | 0.5000 | 0.5000 |" in text
    assert "### 16 bits, eps 8/255" in text
    assert "| ATRDH | 0.8000 | 0.6000 (0.1000) | 0.7000 (0.1000) |" in text
    assert "surrogate (clean / white-box t-mAP) |  | 0.7500 / 0.9000 | 0.7500 / 0.9000 |" in text
    assert "CgAT's mAP above ATRDH's under 1 of 2 surrogates" in text
    assert (
        "Surrogates trained and NAG crafted on NVIDIA H200 (resnet34); on this machine's CPU (resnet18); the "
        "victims trained on this machine's CPU."
    ) in text
    assert "mAP points lost to NAG: undefended 40.0 to 50.0, ATRDH 10.0 to 20.0, CgAT 14.0 to 15.0" in text


def test_attack_tables_name_the_lowest_attack(tmp_path) -> None:
    base = {
        "dataset": "fashion-mnist",
        "bits": 32,
        "model": "dph",
        "protocol": "pgd20",
        "queries": 1000,
        "steps": None,
        "margin": None,
        "seconds_per_image": 0.01,
    }
    maps = {
        "clean": 0.85,
        "p2p": 0.55,
        "dhta": 0.53,
        "hag": 0.31,
        "sdha": 0.26,
        "pga-dagger": 0.27,
        "pga": 0.28,
    }
    rows = [{**base, "attack": a, "map": v} for a, v in maps.items()]
    text = attack_benchmark_markdown(rows, tmp_path / "figures")
    assert "fashion-mnist 32 bits (dph): lowest is SDHA (0.2600)" in text
    rows += [
        {**base, "attack": "prosgan", "map": 0.01, "linf": 0.7},
        {**base, "attack": "cascade", "map": 0.2, "linf": 8 / 255},
    ]
    text = attack_benchmark_markdown(rows, tmp_path / "figures")
    assert (
        "lowest is SDHA (0.2600), beside ProS-GAN 0.0100 (unbounded: L-inf 178/255), Robust cascade 0.2000"
        in text
    )


def test_time_table_names_the_cells_timed_on_one_thread(tmp_path) -> None:
    base = {
        "dataset": "fashion-mnist",
        "bits": 32,
        "model": "dph",
        "protocol": "default",
        "queries": 100,
        "steps": None,
        "margin": None,
        "seconds_per_image": 0.01,
    }
    rows = [
        {**base, "attack": "clean", "map": 0.85},
        {**base, "attack": "hag", "map": 0.3},
        {**base, "attack": "saat", "map": 0.4, "cpu_threads": 1},
        {**base, "attack": "cascade", "map": 0.2, "cpu_threads": 2},
    ]
    text = attack_benchmark_markdown(rows, tmp_path / "figures")
    assert "(the rest on two): SAAT (fashion-mnist). Their seconds" in text
    rows[2]["cpu_threads"] = 2
    assert "Timed on one thread" not in attack_benchmark_markdown(rows, tmp_path / "figures")


def test_gpu_benchmark_runs_quick_on_the_cpu(tmp_path):
    """``bench_gpu.py --quick`` must not rot: it runs on the CPU in seconds and writes typed rows."""
    import subprocess

    from robusthash.results import BenchmarkRows, load_results

    out = tmp_path / "gpu.json"
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "bench_gpu.py"),
            "--quick",
            "--device",
            "cpu",
            "--backbones",
            "alexnet",
            "--image-size",
            "64",
            "--attacks",
            "pga,hag",
            "--variants",
            "plain,channels_last",
            "--quick-steps",
            "1",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        cwd=root,
    )
    doc = load_results(out)
    assert isinstance(doc, BenchmarkRows)
    got = {(r["precision"], r["variant"], r["attack"]) for r in doc.rows}
    assert got == {(p, "plain", a) for p in ("fp32", "bf16") for a in ("bare", "pga", "hag")} | {
        (p, "channels_last", a) for p in ("fp32", "bf16") for a in ("bare", "pga")
    }
    assert all(r["seconds_per_image"] > 0 and r["device_name"].startswith("cpu") for r in doc.rows)
    assert "| alexnet | fp32 | plain | pga |" in doc.markdown


def test_two_writers_of_one_rows_file_keep_each_others_rows(tmp_path):
    """Two benchmark processes sharing a results file (each measuring its own rows) lose nothing: every write
    merges what the other wrote since; a row of the same key replaces the old one."""
    import json

    from common import Rows

    path = tmp_path / "bench.json"
    first, second = Rows(path, "cmd", ("a",)), Rows(path, "cmd", ("a",))
    first.add({"a": 1, "map": 0.1})
    second.add({"a": 2, "map": 0.2})  # second never read row 1, yet keeps it
    first.add({"a": 3, "map": 0.3})
    second.add({"a": 1, "map": 0.5})
    first.set_markdown("tables")
    doc = json.loads(path.read_text())
    assert sorted((r["a"], r["map"]) for r in doc["rows"]) == [(1, 0.5), (2, 0.2), (3, 0.3)]
    assert doc["markdown"] == "tables" and first.has(a=2) and Rows(path, "", ("a",)).has(a=3)


def test_the_defence_page_names_the_tables_not_rerun_on_the_retrained_models():
    from views import _not_rerun

    rows = [{"defense": "cgat", "lam": lam, "attack": "robust", "map": 0.6} for lam in (0.5, 1.0)]
    note = _not_rerun(rows)
    assert (
        "ProS-GAN and the NAG transfer table (Table 4) have not been re-run" in note and "lambda" not in note
    )
    rows += [{"attack": "prosgan", "map": 0.1}, {"protocol": "nag", "attack": "nag@resnet18", "map": 0.7}]
    assert _not_rerun(rows) == "\n"
    assert "ProS-GAN, the lambda sweep (Fig. 4) and the NAG" in _not_rerun([rows[0]])
