"""Robustness evaluation: run a suite of attacks on the query set and measure retrieval under each.

Per attack: mAP@K of the adversarial queries (relevance = the query's true labels), t-mAP for targeted
attacks (relevance = the target label), seconds per adversarial image, mean bits flipped against the clean
code, mean L-inf and L2 of the perturbation, PR and P@N curves. Across attacks: the **robust mAP**, the mean
over queries of the lowest AP any attack reached on that query (a worst-case ensemble, like AutoAttack's).

Timing is wall clock per attack and includes target selection and pharos / anchor codes; it excludes encoding
the database and the reference (training) set, which every attack shares and which is reported once as
``setup_seconds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robusthash import metrics
from robusthash.attacks import CodeBank, attack_class, create_attack
from robusthash.data import DatasetSplits, iterate_batches, labels_of
from robusthash.errors import UserError
from robusthash.evaluation import encode, encode_images
from robusthash.models import HashModel

PROTOCOLS = ("default", "pgd20")
DEFAULT_ATTACKS = ("pga", "hag", "sdha", "p2p", "dhta")


def protocol_options(name: str, protocol: str, steps: int | None = None) -> dict[str, Any]:
    """Constructor options of attack ``name`` under a protocol.

    ``default``: each attack's published optimiser and iteration count. ``pgd20``: every attack optimised by
    PGD with 20 signed steps of 1/255 (PgA Table 5). ``steps`` overrides the iteration count in both.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    attack_class(name)  # validates the name
    options: dict[str, Any] = {}
    if protocol == "pgd20":
        options["steps"] = 20
        options["step_size"] = 1 / 255
        if name in ("hag", "sdha"):
            options["optimizer"] = "pgd"
    if steps is not None:
        options["steps"] = steps
    return options


@dataclass
class AttackSuite:
    """What to run: attacks, protocol and the shared settings."""

    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    protocol: str = "default"
    steps: int | None = None
    eps: float = 8 / 255
    topk: int | None = 1000
    queries: int | None = None
    batch_size: int = 128
    seed: int = 0
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.attacks:
            raise UserError("no attack given; valid: " + ", ".join(sorted(DEFAULT_ATTACKS)))
        for name in self.attacks:
            attack_class(name)
        protocol_options(self.attacks[0], self.protocol)
        if self.queries is not None and self.queries < 1:
            raise UserError(f"--queries must be >= 1, got {self.queries}")


def query_subset(data: DatasetSplits, count: int | None, seed: int) -> Tensor:
    """Indices of the queries to attack: all of them, or ``count`` drawn with ``seed`` (sorted)."""
    n = len(data.query)
    if count is None or count >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:count].sort().values


def _images(data: DatasetSplits, indices: Tensor) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for x, y, _ in iterate_batches(data.query, 500, indices=indices):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _scores(codes: Tensor, db: CodeBank, labels: Tensor, topk: int | None) -> dict[str, Any]:
    rep = metrics.retrieval_report(codes, db.codes, labels, db.labels, topk)
    rep["ap"] = rep["ap"].tolist()
    return rep


def evaluate_attacks(
    model: HashModel,
    data: DatasetSplits,
    suite: AttackSuite,
    device: torch.device | str = "cpu",
    quiet: bool = False,
) -> dict[str, Any]:
    """Run ``suite`` against ``model`` on ``data.query`` (see module docstring). Returns a JSON-ready dict."""
    suite.validate()
    device = torch.device(device)
    model = model.to(device).eval()
    began = time.perf_counter()
    database = CodeBank(encode(model, data.database, device, quiet=quiet, desc="encode database"),
                        labels_of(data.database).clone())  # fmt: skip
    reference = CodeBank(encode(model, data.train, device, quiet=quiet, desc="encode reference"),
                         labels_of(data.train).clone())  # fmt: skip
    setup_seconds = time.perf_counter() - began
    indices = query_subset(data, suite.queries, suite.seed)
    images, labels = _images(data, indices)
    clean_codes = encode_images(model, images, device)
    clean = _scores(clean_codes, database, labels, suite.topk)
    results: dict[str, Any] = {
        "queries": len(indices),
        "query_indices": indices.tolist(),
        "setup_seconds": setup_seconds,
        "clean": clean,
        "attacks": {},
    }
    per_query_ap = []
    for name in suite.attacks:
        options = {
            **protocol_options(name, suite.protocol, suite.steps),
            **suite.attack_options.get(name, {}),
        }
        attack = create_attack(name, model, eps=suite.eps, reference=reference.to(device),
                               database=database, seed=suite.seed, batch_size=suite.batch_size, quiet=quiet,
                               **options)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        targets = attack.choose_targets(labels) if attack.targeted else None
        adversarial = attack(images, labels, targets)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        codes = encode_images(model, adversarial, device)
        entry = _scores(codes, database, labels, suite.topk)
        delta = (adversarial - images).flatten(1)
        entry.update({
            "settings": attack.describe(),
            "targeted": attack.targeted,
            "seconds": seconds,
            "seconds_per_image": seconds / len(indices),
            "bits_flipped": float((codes != clean_codes).float().sum(1).mean()),
            "linf": float(delta.abs().amax(1).mean()),
            "l2": float(delta.norm(dim=1).mean()),
        })  # fmt: skip
        if targets is not None:
            entry["tmap"] = metrics.targeted_map(codes, database.codes, targets, database.labels, suite.topk)
        per_query_ap.append(np.asarray(entry["ap"]))
        results["attacks"][name] = entry
    if per_query_ap:
        worst = np.min(np.stack(per_query_ap), axis=0)
        results["robust_map"] = float(worst.mean())
        results["robust_ap"] = worst.tolist()
    return results
