"""``robusthash demo``: the embedded default end to end. Every stage reuses what an earlier run left in
``out`` (checkpoints resume, finished attack results are read back), so an interrupted demo picks up where it
stopped.

Stages: train DPH / small_cnn / 32 bits on Fashion-MNIST; attack it with P2P, DHTA, HAG, SDHA and PgA (all as
PGD-20, PgA Table 5's protocol, so the whole suite runs in about a minute); adversarially train it with ATRDH,
PgA-AT and CgAT; attack each defended model again; print the CgAT-style table, write the results and build
the report (``out/report/index.html``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from robusthash.checkpoint import read_checkpoint
from robusthash.data import DatasetSplits, load_dataset
from robusthash.defenses import DefenseConfig, defend
from robusthash.report.build import build_report
from robusthash.report.results import results_document, write_results
from robusthash.report.tables import attack_table, markdown_table
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.runtime import resolve_device, seed_everything
from robusthash.training import TrainConfig, train

DEMO_DATASET = {"name": "fashion-mnist", "database": 10_000, "split_seed": 0, "image_size": None}
DEMO_ATTACKS = ["p2p", "dhta", "hag", "sdha", "pga"]
DEFENSES = ["atrdh", "pga-at", "cgat"]
ROW_NAMES = {"none": "undefended", "atrdh": "ATRDH", "pga-at": "PgA-AT", "cgat": "CgAT"}
COLUMN_NAMES = {"p2p": "P2P", "dhta": "DHTA", "hag": "HAG", "sdha": "SDHA", "pga": "PgA"}


def _attack_stage(model_path: Path, data: DatasetSplits, options: dict[str, Any], suite: AttackSuite,
                  device: torch.device, out: Path, seed: int, quiet: bool) -> dict[str, Any]:  # fmt: skip
    """Attack results of one model, reused from ``out`` when an earlier run finished them."""
    config = {"model": str(model_path), "dataset": options, "suite": asdict(suite)}
    if out.exists():
        doc = json.loads(out.read_text())
        if doc.get("config") == config:
            return doc["results"]
    ckpt = read_checkpoint(model_path)
    results = evaluate_attacks(ckpt.build_model(device), data, suite, device, quiet=quiet)
    write_results(results_document("attack", config, seed, device, ckpt.meta, results), out)
    return results


def defense_table(all_results: dict[str, dict[str, Any]], attacks: list[str]) -> str:
    """CgAT's table layout: rows = defences, columns = clean, each attack, and the worst-case robust mAP."""
    header = ["model", "Clean"] + [COLUMN_NAMES.get(a, a) for a in attacks] + ["robust"]
    rows = []
    for name, r in all_results.items():
        rows.append([ROW_NAMES.get(name, name), r["clean"]["map"]]
                    + [r["attacks"][a]["map"] for a in attacks] + [r["robust_map"]])  # fmt: skip
    return markdown_table(header, rows)


def run_demo(out: Path, data_dir: str | None, seed: int, device_name: str, quiet: bool) -> int:
    began = time.perf_counter()
    device = resolve_device(device_name)
    seed_everything(seed)
    out.mkdir(parents=True, exist_ok=True)
    options = {**DEMO_DATASET, "data_dir": data_dir}
    data = load_dataset("fashion-mnist", data_dir, options["split_seed"], options["database"])
    config = TrainConfig(seed=seed)
    model_path = out / "model.pt"
    print(
        f"[1/5] training {config.loss} / {config.backbone} / {config.bits} bits on {data.name} -> {model_path}"
    )
    train(data, config, model_path, device, dataset_options=options, quiet=quiet)

    suite = AttackSuite(attacks=DEMO_ATTACKS, protocol="pgd20", topk=1000, seed=seed)
    print(
        f"[2/5] attacking the undefended model ({', '.join(DEMO_ATTACKS)}; PGD-20; {len(data.query)} queries)"
    )
    results = {"none": _attack_stage(model_path, data, options, suite, device, out / "attacks-none.json", seed,
                                     quiet)}  # fmt: skip
    print(attack_table(results["none"], "undefended model, PGD-20 protocol"))

    print(f"[3/5] adversarial training: {', '.join(DEFENSES)} ({DefenseConfig().epochs} epochs each)")
    base = read_checkpoint(model_path)
    paths = {}
    for method in DEFENSES:
        paths[method] = out / f"model-{method}.pt"
        defend(base, data, DefenseConfig(method=method, seed=seed), paths[method], device, quiet=quiet)

    print("[4/5] attacking the defended models")
    for method in DEFENSES:
        results[method] = _attack_stage(paths[method], data, options, suite, device,
                                        out / f"attacks-{method}.json", seed, quiet)  # fmt: skip
    table = defense_table(results, DEMO_ATTACKS)
    summary = {
        "dataset": options, "train": asdict(config), "defense": asdict(DefenseConfig(seed=seed)),
        "suite": asdict(suite), "table": {k: {"clean": v["clean"]["map"], "robust": v["robust_map"],
                                               **{a: v["attacks"][a]["map"] for a in DEMO_ATTACKS}}
                                           for k, v in results.items()},
    }  # fmt: skip
    write_results(results_document("demo", summary, seed, device, base.meta, {"table": summary["table"]}),
                  out / "results.json")  # fmt: skip
    (out / "defense_table.md").write_text(table, encoding="utf-8")
    print(f"\nmAP@1000 on Fashion-MNIST (DPH, 32 bits), attacks as PGD-20, eps 8/255:\n\n{table}")
    print("[5/5] writing the report (tables, PR and P@N curves, retrieval gallery)")
    index = build_report([out / "results.json"], out / "report", device=device)
    print(
        f"results in {out}/ (results.json, attacks-*.json, defense_table.md); report: {index}; "
        f"{time.perf_counter() - began:.0f} s in all"
    )
    return 0
