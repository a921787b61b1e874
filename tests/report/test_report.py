"""The report: tables, figures and page from results files; the gallery; the page in a real browser."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from robusthash.app.report.build import build_report, collect
from robusthash.app.report.gallery import draw_gallery
from robusthash.errors import UserError
from robusthash.results import SCHEMA, BenchmarkRows, RobustnessRun, load_results
from robusthash.robustness import AttackSuite, evaluate_attacks


@pytest.fixture(scope="module")
def results_files(toy, tmp_path_factory):
    """Attack results of the toy model, recorded once as undefended and once as CgAT: one defence table."""
    data, model = toy
    folder = tmp_path_factory.mktemp("results")
    suite = AttackSuite(attacks=["pga", "p2p"], protocol="pgd20", eps=32 / 255, topk=None, gallery_queries=2)
    paths = []
    for name, defense in (("none", None), ("cgat", {"method": "cgat"})):
        meta = {
            "kind": "defended" if defense else "trained",
            "model": model.config,
            "defense": defense,
            "train": {"loss": "dph"},
            "dataset": {"name": "toy"},
            "seed": 0,
        }
        run = evaluate_attacks(
            model,
            data,
            suite,
            quiet=True,
            config={"model": str(folder / f"{name}.pt"), "dataset": {"name": "toy"}},
            model_meta=meta,
        )
        paths.append(run.write(folder / f"attacks-{name}.json"))
    rows = BenchmarkRows(
        config={},
        seed=0,
        environment={"torch": "x"},
        created="",
        benchmark="attacks",
        command="python benchmarks/bench_attacks.py",
        markdown="### Table 5\n\n| a | b |\n|---|---:|\n| x | 1 |\n",
        rows=[{"attack": a, "map": m} for a, m in (("clean", 0.8), ("hag", 0.3))],
    )
    return paths, rows.write(folder / "attacks.json")


def test_report_folder_has_page_markdown_csv_and_figures(results_files, tmp_path):
    paths, bench = results_files
    index = build_report([*paths, bench], tmp_path / "rep")
    page = index.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    # PR and P@N for two models and the gallery; no cost plot: both attacks ran 20 steps (PGD-20), so their
    # times differ by noise alone
    assert page.count("data:image/png;base64,") == 5 and "Attack strength against cost" not in page
    assert "Defences" in page and "robust (worst case per query)" in page and "Table 5" in page
    assert "torch" in page  # versions listed
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| undefended |" in md and "figures/" in md
    with (tmp_path / "rep" / "defenses.csv").open() as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["model", "Clean", "PgA", "P2P", "robust"] and [r[0] for r in table[1:]] == [
        "undefended",
        "CgAT",
    ]
    for r in table[1:]:
        assert 0 <= float(r[1]) <= 1
    run = load_results(paths[0])
    assert isinstance(run, RobustnessRun) and f"{run.clean.map:.4f}" in page
    assert json.loads(paths[0].read_text())["schema"] == SCHEMA


def test_report_rejects_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="not found"):
        collect([tmp_path / "nope.json"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        collect([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a robusthash results file"):
        collect([tmp_path / "other.json"])
    (tmp_path / "future.json").write_text('{"schema": "robusthash-results/99", "kind": "robustness"}')
    with pytest.raises(UserError, match="newer robusthash"):
        collect([tmp_path / "future.json"])
    (tmp_path / "damaged.json").write_text(f'{{"schema": "{SCHEMA}", "kind": "robustness"}}')
    with pytest.raises(UserError, match="damaged"):
        collect([tmp_path / "damaged.json"])
    with pytest.raises(UserError, match="no results file"):
        build_report([], tmp_path / "rep")


def test_gallery_is_drawn_from_the_stored_run_and_marks_relevant_items(results_files, tmp_path):
    paths, _ = results_files
    run = load_results(paths[0])
    assert run.gallery is not None and len(run.gallery.items) == 2 and run.gallery.attack == "pga"
    item = run.gallery.items[0]
    assert len(item.clean_top) == 10 and all(str(i) in run.gallery.database for i in item.adversarial_top)
    path = draw_gallery({"toy": run.gallery}, tmp_path / "g.png")
    from PIL import Image

    img = Image.open(path)
    assert img.size[0] > 400 and img.size[1] > 200
    pixels = torch.from_numpy(np.array(img.convert("RGB"))).reshape(-1, 3).int()
    green = ((pixels[:, 1] > 130) & (pixels[:, 0] < 60) & (pixels[:, 2] < 110)).sum()
    assert green > 100  # relevant items are framed in green


def test_schema_1_results_are_still_read(results_files, tmp_path):
    paths, _ = results_files
    run = load_results(paths[0])
    legacy = {
        "schema": "robusthash-results/1",
        "command": "attack",
        "config": run.config,
        "seed": 0,
        "environment": {},
        "model": run.model,
        "results": {
            "queries": len(run.query_indices),
            "query_indices": run.query_indices,
            "clean": {
                "map": run.clean.map,
                "topk": None,
                "ap": run.clean.ap,
                "pr_curve": run.clean.pr_curve,
                "p_at_n": run.clean.p_at_n,
            },
            "attacks": {
                a.name: {
                    "map": a.map,
                    "topk": None,
                    "ap": a.scores.ap,
                    "pr_curve": {},
                    "p_at_n": {},
                    "settings": a.settings,
                    "targeted": a.targeted,
                    "seconds": a.seconds,
                    "bits_flipped": 1.0,
                    "linf": 0.1,
                    "l2": 1.0,
                }
                for a in run.attacks
            },
        },
    }
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    old = load_results(tmp_path / "old.json")
    assert isinstance(old, RobustnessRun) and old.robust_map == pytest.approx(run.robust_map)
    assert [a.display_name for a in old.attacks] == ["PgA", "P2P"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed ('make test' installs it)")
def test_page_renders_in_a_headless_browser(results_files, tmp_path):
    paths, bench = results_files
    index = build_report([*paths, bench], tmp_path / "rep")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = index.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") >= 3 and dom.stdout.count("<img") >= 4
    assert "robusthash robustness report" in dom.stdout
    # a summary in words first, a glossary of the numbers shown, and no absolute path in the header
    assert dom.stdout.index('class="summary"') < dom.stdout.index("<table")
    assert "Glossary" in dom.stdout and "<dt>bits flipped</dt>" in dom.stdout
    assert str(tmp_path) not in dom.stdout.split("</p>", 1)[0]
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1400,2400", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.is_file()
    assert not re.search(r"(Uncaught|Failed to load resource|ERR_FILE_NOT_FOUND)", run.stderr)
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # not a blank page
    keep = Path(__file__).resolve().parents[2] / "runs" / "test-report-screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)


def test_the_summary_says_what_happened_and_the_cost_plot_needs_different_step_counts(results_files):
    from dataclasses import replace

    from robusthash.app.report.build import summary
    from robusthash.app.report.plots import shows_cost
    from robusthash.app.report.tables import attack_rows

    paths, _ = results_files
    runs = [load_results(p) for p in paths]
    text = summary(runs, [])
    base, best = runs[0], max(runs, key=lambda r: r.robust_map)
    strongest = min(base.attacks, key=lambda a: a.map)
    assert f"falls from {base.clean.map:.4f} clean to {strongest.map:.4f}" in text
    assert f"robust mAP of {base.robust_map:.4f}" in text and "upper bound" in text
    if best is not base:
        assert f"The most robust model is {best.model_label}: robust mAP {best.robust_map:.4f}" in text
    assert not shows_cost(base)  # PGD-20: one step count
    longer = replace(base, attacks=[base.attacks[0], replace(base.attacks[1], settings={"steps": 100})])
    assert longer.attacks[1].steps == 100 and shows_cost(longer)
    header, _ = attack_rows(base)
    assert "s / image (with fit)" not in header and f"t-mAP@{base.clean.topk}" in header  # P2P: targeted
