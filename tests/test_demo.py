"""``robusthash demo`` end to end on a toy problem: every stage runs, the table is printed, the report is written."""

from __future__ import annotations

import functools
import json

from robusthash import data as data_module
from robusthash import demo
from robusthash.defenses import DefenseConfig
from robusthash.training import TrainConfig
from tests.test_training import toy_data


def test_demo_trains_attacks_defends_and_writes_the_report(tmp_path, monkeypatch, capsys):
    toy = toy_data(n_per_class=20)
    monkeypatch.setattr(demo, "load_dataset", lambda *a, **k: toy)
    monkeypatch.setattr(
        data_module, "load_dataset", lambda *a, **k: toy
    )  # the report's gallery reloads the data
    monkeypatch.setattr(demo, "TrainConfig", functools.partial(TrainConfig, bits=8, epochs=2, lr=3e-3))
    monkeypatch.setattr(demo, "DefenseConfig", functools.partial(DefenseConfig, epochs=1))
    assert demo.run_demo(tmp_path, None, seed=0, device_name="cpu", quiet=True) == 0
    printed = capsys.readouterr().out
    for row in ("| undefended |", "| ATRDH |", "| PgA-AT |", "| CgAT |"):
        assert row in printed
    assert "[5/5] writing the report" in printed
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Defences" in html and "Retrieval gallery" in html
    assert (tmp_path / "report" / "figures" / "gallery.png").stat().st_size > 0
    table = json.loads((tmp_path / "results.json").read_text())["results"]["table"]
    assert set(table) == {"none", "atrdh", "pga-at", "cgat"}
    assert all(0.0 <= v["robust"] <= v["pga"] <= 1.0 for v in table.values())
