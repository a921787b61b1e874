"""``robusthash demo``: the embedded default, end to end, resumable (each stage's output is reused)."""

from __future__ import annotations

from pathlib import Path

from robusthash.checkpoint import read_checkpoint
from robusthash.data import load_dataset
from robusthash.evaluation import evaluate_retrieval
from robusthash.report.results import results_document, write_results
from robusthash.runtime import resolve_device, seed_everything
from robusthash.training import TrainConfig, train

DEMO_DATASET = {"name": "fashion-mnist", "database": 10_000, "split_seed": 0, "image_size": None}


def run_demo(out: Path, data_dir: str | None, seed: int, device_name: str, quiet: bool) -> int:
    device = resolve_device(device_name)
    seed_everything(seed)
    options = {**DEMO_DATASET, "data_dir": data_dir}
    data = load_dataset("fashion-mnist", data_dir, options["split_seed"], options["database"])
    config = TrainConfig(seed=seed)
    model_path = out / "model.pt"
    print(f"[1/2] training {config.loss} / {config.backbone} / {config.bits} bits on {data.name} -> {model_path}")
    result = train(data, config, model_path, device, dataset_options=options, quiet=quiet)
    print(f"[2/2] evaluating clean retrieval ({len(data.query)} queries, {len(data.database)} database items)")
    report = evaluate_retrieval(result.model, data, device, topk=1000, quiet=quiet)
    meta = read_checkpoint(model_path).meta
    doc = results_document("demo", {"dataset": options, "train": config.__dict__}, seed, device, meta,
                           {"clean": report})  # fmt: skip
    write_results(doc, out / "results.json")
    print(f"\nclean mAP@1000 = {report['map']:.4f}   P@100 = {report['p_at_n']['precision'][0]:.4f}")
    print(f"results: {out / 'results.json'}")
    return 0
