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

from robusthash.errors import UserError
from robusthash.report.build import build_report, collect
from robusthash.report.gallery import retrieval_gallery
from robusthash.report.results import results_document, write_results
from robusthash.robustness import AttackSuite, evaluate_attacks


@pytest.fixture(scope="module")
def results_files(toy, tmp_path_factory):
    """Attack results of the toy model and of a copy with noise, as two models of one defence table."""
    data, model = toy
    folder = tmp_path_factory.mktemp("results")
    suite = AttackSuite(attacks=["pga", "p2p"], protocol="pgd20", eps=32 / 255, topk=None)
    paths = []
    for name, defense in (("none", None), ("cgat", {"method": "cgat"})):
        res = evaluate_attacks(model, data, suite, quiet=True)
        meta = {"kind": "defended" if defense else "trained", "model": model.config, "defense": defense,
                "train": {"loss": "dph"}, "dataset": {"name": "toy"}, "seed": 0}  # fmt: skip
        config = {"model": str(folder / f"{name}.pt"), "dataset": {"name": "toy"}, "suite": suite.__dict__}
        doc = results_document("attack", config, 0, "cpu", meta, res)
        write_results(doc, folder / f"attacks-{name}.json")
        paths.append(folder / f"attacks-{name}.json")
    rows = {"command": "python benchmarks/bench_attacks.py", "environment": {"torch": "x"},
            "rows": [{"dataset": "fashion-mnist", "bits": 32, "model": "dph", "protocol": "pgd20", "attack": a,
                      "steps": None, "margin": None, "map": m, "queries": 10}
                     for a, m in (("clean", 0.8), ("hag", 0.3), ("pga", 0.2))]}  # fmt: skip
    (folder / "attacks.json").write_text(json.dumps(rows))
    return paths, folder / "attacks.json"


def test_report_folder_has_page_markdown_csv_and_figures(results_files, tmp_path):
    paths, bench = results_files
    index = build_report([*paths, bench], tmp_path / "rep", gallery=False)
    page = index.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    assert page.count("data:image/png;base64,") >= 6  # PR, P@N, efficiency for two models
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
    doc = json.loads(paths[0].read_text())
    assert f"{doc['results']['clean']['map']:.4f}" in page


def test_report_rejects_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="not found"):
        collect([tmp_path / "nope.json"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        collect([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="neither"):
        collect([tmp_path / "other.json"])
    with pytest.raises(UserError, match="no results file"):
        build_report([], tmp_path / "rep")


def test_gallery_marks_relevant_items(toy, tmp_path):
    data, model = toy
    path = retrieval_gallery({"toy": model}, data, tmp_path / "g.png", attack="pga", queries=2, top=5,
                             caption="toy model", attack_options={"steps": 5})  # fmt: skip
    from PIL import Image

    img = Image.open(path)
    assert img.size[0] > 400 and img.size[1] > 200
    pixels = torch.from_numpy(np.array(img.convert("RGB"))).reshape(-1, 3).int()
    green = ((pixels[:, 1] > 130) & (pixels[:, 0] < 60) & (pixels[:, 2] < 110)).sum()
    assert green > 100  # relevant items are framed in green


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed ('make test' installs it)")
def test_page_renders_in_a_headless_browser(results_files, tmp_path):
    paths, bench = results_files
    index = build_report([*paths, bench], tmp_path / "rep", gallery=False)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    url = index.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") >= 3 and dom.stdout.count("<img") >= 6
    assert "robusthash robustness report" in dom.stdout
    shot = tmp_path / "report.png"
    run = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0 and shot.is_file()
    assert not re.search(r"(Uncaught|Failed to load resource|ERR_FILE_NOT_FOUND)", run.stderr)
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # not a blank page
    keep = Path(__file__).resolve().parents[2] / "runs" / "test-report-screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)
