"""Certified robustness of hashing retrieval: center smoothing of the query's code and a per-query lower bound on
AP that no L2 perturbation within the certified radius can beat.

Center smoothing (Kumar and Goldstein, "Center smoothing: certified robustness for networks with structured
outputs", NeurIPS 2021; the authors' ``center_smoothing.py`` is the reference for every constant here): the
smoothed code of an image x is the center, in Hamming distance, of the codes of Gaussian-noised copies
``x + N(0, sigma^2 I)``. Its certificate: if ``||delta||_2 <= R``, the smoothed code of ``x + delta`` lies within
Hamming distance ``r(R)`` of the smoothed code of ``x``, with probability at least ``1 - alpha_1 - alpha_2`` over
the sampling. The steps, per query (:func:`certify_query`):

1. **Center** (the authors' ``compute_center_hd``): ``n_center`` candidate codes and ``n_pred`` sample codes;
   the center is the candidate with the smallest median Hamming distance to the samples, and that median is the
   ball's radius. With ``n_pred`` fresh samples, the share within the radius minus
   ``delta_1 = sqrt(log(2 / alpha_1) / (2 n_pred))`` must leave ``max(delta_1, 1/2 - (share - delta_1)) <= delta``;
   otherwise the query abstains.
2. **Radius** (the authors' ``certify``): ``n_cert`` fresh samples' distances to the center; for each R, the
   quantile ``q = Phi(Phi^-1(1/2 + delta) + R / sigma) + sqrt(log(1 / alpha_2) / (2 n_cert))`` of those distances,
   times 3 (the relaxed triangle inequality of a 2-approximate center, the authors' ``radius_coeff``), floored
   to a whole number of bits, is ``r(R)``. ``q > 1`` cannot be certified at this sample size: the query abstains
   at that R. The order statistic ``ceil(q n)`` is taken (never below the interpolated quantile of the reference).

**The AP bound** (:func:`certified_ap`): every code within Hamming ``r`` of the center is at most ``r`` farther
from each relevant database item and at least ``r`` nearer to each irrelevant one (triangle inequality). Ranking
the database with relevant items pushed back by ``r`` and irrelevant ones forward by ``r`` (within [0, K], ties
by database index as everywhere) therefore puts every relevant item at a position no better than any such code
can give it, so its AP is a lower bound on the AP of every code in the ball. The bound is for AP over the whole
database (every relevant item counts, the divisor is fixed): AP@K in the field's ``CalcTopMap`` form divides by
the relevant items within the top K, so it can *rise* when a late hit leaves the top K, and no pushed ranking
bounds it. A query without a certificate counts AP 0 in the certified mAP; the smoothed model itself always
answers with its center (the check decides only whether a certificate is given). The database is encoded by
the base model: only the query is attacked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robusthash import metrics
from robusthash.attacks import ATTACKS, create_attack
from robusthash.attacks.base import query_generator
from robusthash.codes import binarize, hamming_distance
from robusthash.config import check_finite, option
from robusthash.data import DatasetSplits
from robusthash.errors import UserError
from robusthash.evaluation import encode_images
from robusthash.robustness import Banks, query_images, query_subset
from robusthash.runtime import check_seed, eval_mode

NORMAL = NormalDist()
RADIUS_COEFF = 3.0  # (1 + beta) R with the 2-approximate center of the samples (the authors' radius_coeff)


@dataclass
class SmoothingConfig:
    """Center smoothing's settings. The defaults are the authors' (alpha 0.005 each, delta 0.05, 30 candidate
    centers) with sample counts sized for a CPU (the authors: 10,000 and 1,000,000): ``n_pred`` must exceed
    ``log(2 / alpha_1) / (2 delta^2)`` (1,199 at the defaults) or every query abstains, and ``n_cert`` sets the
    largest certifiable radius (about ``1.8 sigma`` at 4,000, ``2 sigma`` at 10,000)."""

    sigma: float = option(0.25, "standard deviation of the smoothing noise (images in [0, 1])")
    radii: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.5],
        metadata={"help": "L2 radii to certify (image units), comma-separated"},
    )
    n_center: int = option(30, "candidate centers (noisy codes) per query")
    n_pred: int = option(2000, "samples that choose the center, and again that check it")
    n_cert: int = option(4000, "samples that measure the certified radius")
    alpha_1: float = option(0.005, "failure probability of the center check")
    alpha_2: float = option(0.005, "failure probability of the radius")
    delta: float = option(0.05, "slack on the half-mass ball (the authors' Delta)")
    batch_size: int = option(64, "noisy copies per model call")
    seed: int = option(0, "seed of every noise draw (per query)")

    def validate(self) -> None:
        check_seed(self.seed)
        check_finite(sigma=self.sigma, alpha_1=self.alpha_1, alpha_2=self.alpha_2, delta=self.delta)
        if self.sigma <= 0:
            raise UserError(f"sigma must be > 0 (images in [0, 1]), got {self.sigma}")
        if not self.radii or any(
            not (isinstance(r, (int, float)) and math.isfinite(r) and r >= 0) for r in self.radii
        ):
            raise UserError(f"radii must be finite L2 radii >= 0, got {self.radii!r}")
        for name in ("n_center", "n_pred", "n_cert", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("alpha_1", "alpha_2"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if not 0 < self.delta < 0.5:
            raise UserError(f"delta must lie in (0, 1/2), got {self.delta}")
        needed = math.ceil(math.log(2 / self.alpha_1) / (2 * self.delta**2))
        if self.n_pred < needed:
            raise UserError(
                f"n_pred {self.n_pred} cannot pass the center check at alpha_1 {self.alpha_1} and delta "
                f"{self.delta}: every query would abstain; use n_pred >= {needed}"
            )

    @property
    def delta_1(self) -> float:
        return math.sqrt(math.log(2 / self.alpha_1) / (2 * self.n_pred))

    def quantile(self, radius: float) -> float:
        """The share of samples whose distance bounds the certified radius at L2 ``radius`` (may exceed 1)."""
        return float(
            NORMAL.cdf(NORMAL.inv_cdf(0.5 + self.delta) + radius / self.sigma)
            + math.sqrt(math.log(1 / self.alpha_2) / (2 * self.n_cert))
        )


@dataclass
class Certificate:
    """One query's certificate: its smoothed code (``center``), the Hamming distance from the base model's code
    to it (``smoothing_error``), the center ball's radius, whether the center check failed (``abstained``: no
    certificate at any radius), and per certified L2 radius the Hamming radius ``r`` within which every perturbed
    query's smoothed code stays (None: no certificate there)."""

    index: int
    center: Tensor
    smoothing_error: int | None
    center_radius: float
    hamming: list[int | None]
    abstained: bool = False


def noisy_codes(
    model: nn.Module, image: Tensor, sigma: float, count: int, generator: torch.Generator, batch_size: int
) -> Tensor:
    """The {-1, +1} codes of ``count`` copies of ``image`` plus ``N(0, sigma^2 I)`` noise from ``generator``
    (drawn on the CPU, so the same seed gives the same noise on any device), in batches."""
    device = _device(model)
    out = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            noise = torch.randn((n, *image.shape), generator=generator) * sigma
            x = image.cpu().unsqueeze(0) + noise
            out.append(binarize(model.preactivation(x.to(device)).float()).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def smoothed_code(
    model: nn.Module, image: Tensor, index: int, config: SmoothingConfig
) -> tuple[Tensor, float, bool]:
    """The smoothed code of query ``index``'s ``image`` (the candidate of smallest median distance), its ball's
    radius, and whether it passes the center check (step 1 of the module docstring). The smoothed model answers
    with the center either way; only a certificate needs the check. The draws come from the query's own
    generators, so the smoothed model is one fixed function of the image for a given seed."""
    streams = {s: query_generator(config.seed, index, f"smoothing-{s}") for s in ("center", "check")}
    with eval_mode(model):
        drawn = noisy_codes(
            model, image, config.sigma, config.n_center + config.n_pred, streams["center"], config.batch_size
        )
        candidates, pred = drawn[: config.n_center], drawn[config.n_center :]
        median = hamming_distance(candidates, pred).median(dim=1).values
        best = int(torch.argmin(median))  # the first of the smallest, as numpy's argmin in the reference
        center, radius = candidates[best], float(median[best])
        check = noisy_codes(model, image, config.sigma, config.n_pred, streams["check"], config.batch_size)
    share = float((hamming_distance(center.unsqueeze(0), check)[0] <= radius).double().mean())
    delta_2 = 0.5 - (share - config.delta_1)
    return center, radius, max(config.delta_1, delta_2) <= config.delta


def certify_query(
    model: nn.Module, image: Tensor, index: int, config: SmoothingConfig, base_code: Tensor | None = None
) -> Certificate:
    """Center smoothing's certificate for one query (the module docstring's steps 1 and 2); every draw comes
    from the query's own generators, so the result does not depend on which other queries are certified."""
    center, radius, passed = smoothed_code(model, image, index, config)
    error = (
        None if base_code is None else int(hamming_distance(center.unsqueeze(0), base_code.unsqueeze(0))[0])
    )
    if not passed:
        return Certificate(index, center, error, radius, [None] * len(config.radii), abstained=True)
    generator = query_generator(config.seed, index, "smoothing-cert")
    with eval_mode(model):
        cert = noisy_codes(model, image, config.sigma, config.n_cert, generator, config.batch_size)
    distances = np.sort(hamming_distance(center.unsqueeze(0), cert)[0].numpy())
    hamming: list[int | None] = []
    for r in config.radii:
        q = config.quantile(r)
        if q > 1.0:
            hamming.append(None)
            continue
        k = min(max(math.ceil(q * len(distances)), 1), len(distances))  # the ceil(q n)-th smallest
        hamming.append(int(math.floor(RADIUS_COEFF * float(distances[k - 1]) + 1e-9)))
    error = (
        None if base_code is None else int(hamming_distance(center.unsqueeze(0), base_code.unsqueeze(0))[0])
    )
    return Certificate(index, center, error, radius, hamming)


def pushed_distances(distances: np.ndarray, relevant: np.ndarray, r: int, bits: int) -> np.ndarray:
    """The worst case of a code within Hamming ``r``: relevant items ``r`` farther, irrelevant ``r`` nearer,
    within [0, ``bits``]."""
    return np.where(relevant, np.minimum(distances + r, bits), np.maximum(distances - r, 0))


def ap_of_distances(distances: np.ndarray, relevant: np.ndarray) -> float:
    """AP over the whole database of one ranking by (distance, database index); 0 without a relevant item."""
    if not relevant.any():
        return 0.0
    order = np.lexsort((np.arange(len(distances)), distances))
    hits = relevant[order]
    positions = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(positions) + 1) / positions))


def certified_ap(center: Tensor, r: int, db_codes: Tensor, relevant: np.ndarray) -> float:
    """A lower bound on the AP (whole database) of every code within Hamming ``r`` of ``center``."""
    distances = hamming_distance(center.unsqueeze(0), db_codes)[0].numpy().astype(np.int64)
    return ap_of_distances(pushed_distances(distances, relevant, r, center.numel()), relevant)


@dataclass
class CertifiedScores:
    """Per query: the certificate and, per certified L2 radius, the certified AP lower bound (0 where it
    abstains) and the smoothed model's clean AP (its center's AP, r = 0)."""

    certificates: list[Certificate]
    certified_ap: list[list[float]]  # [radius][query]
    smoothed_ap: list[float]  # the smoothed model's answer on the clean query (its center, checked or not)


def certify_queries(
    model: nn.Module,
    images: Tensor,
    indices: Tensor,
    labels: Tensor,
    db_codes: Tensor,
    db_labels: Tensor,
    config: SmoothingConfig,
    progress: Callable[[], None] | None = None,
) -> CertifiedScores:
    """Certify each query and bound its AP against the database (``db_codes`` from the base model)."""
    config.validate()
    with eval_mode(model), torch.no_grad():
        base = binarize(model.preactivation(images.to(_device(model))).float()).cpu()
    certificates, bounds, smoothed = [], [[] for _ in config.radii], []
    for row, index in enumerate(indices.tolist()):
        cert = certify_query(model, images[row], int(index), config, base[row])
        relevant = ((labels[row].double() @ db_labels.double().T) > 0).numpy()
        certificates.append(cert)
        smoothed.append(certified_ap(cert.center, 0, db_codes, relevant))
        for k, r in enumerate(cert.hamming):
            bounds[k].append(0.0 if r is None else certified_ap(cert.center, r, db_codes, relevant))
        if progress is not None:
            progress()
    return CertifiedScores(certificates, bounds, smoothed)


def smoothed_ap(
    model: nn.Module,
    images: Tensor,
    indices: Tensor,
    labels: Tensor,
    db_codes: Tensor,
    db_labels: Tensor,
    config: SmoothingConfig,
) -> list[float]:
    """The smoothed model's AP (whole database) on ``images`` (e.g. adversarial queries): each image's smoothed
    code (its center, checked or not) from its query's generators."""
    out = []
    for row, index in enumerate(indices.tolist()):
        center, _, _ = smoothed_code(model, images[row], int(index), config)
        relevant = ((labels[row].double() @ db_labels.double().T) > 0).numpy()
        out.append(certified_ap(center, 0, db_codes, relevant))
    return out


@dataclass
class CertifySettings:
    """What :func:`certify_model` runs besides the smoothing: the queries (a subset drawn with the smoothing's
    seed) and the white-box attacks in L2 at each radius that give the empirical side."""

    queries: int | None = option(100, "certify this many queries (a seeded subset; none = all)")
    attacks: list[str] = field(
        default_factory=lambda: ["pga", "cascade"],
        metadata={
            "help": "L2 attacks on the base model whose images the smoothed model scores (the empirical "
            "upper bound), comma-separated"
        },
    )
    steps: int | None = option(None, "iterations of each attack (default: its own)")


def certify_model(
    model: nn.Module,
    data: DatasetSplits,
    smoothing: SmoothingConfig,
    settings: CertifySettings,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    label: str = "",
) -> dict[str, Any]:
    """Certify a model's smoothed codes on a query subset and attack it at the same L2 radii: the parts of a
    :class:`~robusthash.results.CertifyRun` (the caller adds the model's record and the environment). Per radius
    R, the certified mAP is a lower bound on the smoothed model's mAP (whole database) under any perturbation of
    L2 norm R; the empirical mAP (each query's lowest smoothed AP over the clean query and the attacks' images)
    is an upper bound. The truth lies between."""
    smoothing.validate()
    unknown = [a for a in settings.attacks if a not in ATTACKS]
    if unknown:
        raise UserError(f"unknown attack(s) {', '.join(unknown)}; valid: {', '.join(ATTACKS.names())}")
    device = torch.device(device)
    model = model.to(device).eval()
    indices = query_subset(data, settings.queries, smoothing.seed)
    images, labels = query_images(data, indices)
    banks = Banks.of(model, data, device, quiet=True)
    db_codes, db_labels = banks.database.codes.cpu(), banks.database.labels.cpu()
    began = time.perf_counter()
    with tqdm(total=len(indices), desc=f"certify {label}".strip(), disable=quiet, leave=False) as bar:
        scores = certify_queries(model, images, indices, labels, db_codes, db_labels, smoothing, bar.update)
    certify_seconds = time.perf_counter() - began
    clean = metrics.average_precision(encode_images(model, images, device), db_codes, labels, db_labels, None)
    empirical: dict[str, list[list[float] | None]] = {}
    for name in settings.attacks:
        per_radius: list[list[float] | None] = []
        for radius in smoothing.radii:
            if radius == 0:
                per_radius.append(None)
                continue
            options = {"steps": settings.steps} if settings.steps is not None else {}
            if name == "cascade":
                options["topk"] = None  # the certificate's AP: the whole database
            attack = create_attack(
                name,
                model,
                eps=radius,
                norm="l2",
                reference=banks.reference,
                database=banks.database,
                seed=smoothing.seed,
                quiet=quiet,
                label=f"{label} L2 {radius:g}".strip(),
                **options,
            )
            adversarial = attack(images.to(device), labels.to(device), indices=indices).cpu()
            per_radius.append(
                smoothed_ap(model, adversarial, indices, labels, db_codes, db_labels, smoothing)
            )
        empirical[name] = per_radius
    return {
        "query_indices": indices.tolist(),
        "clean_ap": [float(v) for v in clean],
        "smoothed_ap": scores.smoothed_ap,
        "certified_ap": scores.certified_ap,
        "hamming": [[c.hamming[k] for c in scores.certificates] for k in range(len(smoothing.radii))],
        "abstained": [c.abstained for c in scores.certificates],
        "smoothing_error": [c.smoothing_error for c in scores.certificates],
        "empirical_ap": empirical,
        "certify_seconds": certify_seconds,
    }
