"""Checks for masked gradients (AutoAttack's flags, for hashing): signs that a robust mAP is inflated.

A defence can look robust because the attacks cannot follow its gradients, not because it is robust
(Athalye et al., ICML 2018). Each check returns a :class:`~robusthash.results.MaskingFlag` that says what was
measured, whether it fired, what it means and what to do:

- :func:`gradient_check`: the share of queries whose input gradient is zero or not finite;
- :func:`stochastic_check`: the share of queries whose logits change between two encodings of the same image;
- :func:`query_beats_white_box`: the share of queries on which a gradient-free attack went lower than every
  gradient-based one;
- :func:`sweep_check`: whether the mAP under PgA-dagger falls as eps grows (8 -> 16 -> 32/255) and as its steps
  move away from the random start.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robusthash import metrics
from robusthash.attacks import CodeBank, create_attack
from robusthash.codes import binarize
from robusthash.results import AttackOutcome, MaskingFlag
from robusthash.runtime import eval_mode

GRADIENT_SHARE = 0.05  # flag when more than this share of queries has a zero or non-finite gradient
STOCHASTIC_SHARE = 0.0  # flag when any query's logits change between two encodings
QUERY_WINS_SHARE = 0.1  # flag when a gradient-free attack beats every white-box one on more of the queries
QUERY_WINS_MARGIN = 0.05  # ... by more than this much AP


def gradient_check(model: nn.Module, images: Tensor, anchor: Tensor) -> MaskingFlag:
    """Input gradient of ``anchor^T h(x)`` (the logits' pull toward the anchor code, e.g. the pharos code) per
    query: the share of queries where it is zero everywhere or not finite."""
    x = images.detach().clone().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        value = (model.preactivation(x).float() * anchor.to(x.device)).sum()
        (grad,) = torch.autograd.grad(value, x, allow_unused=True)
    if grad is None:
        share = 1.0
    else:
        flat = grad.flatten(1)
        bad = (~torch.isfinite(flat)).any(1) | (flat.abs().amax(1) == 0)
        share = float(bad.float().mean()) if len(bad) else 0.0
    return MaskingFlag(
        name="zero-gradient",
        value=share,
        threshold=GRADIENT_SHARE,
        fired=share > GRADIENT_SHARE,
        measured=f"{share:.0%} of queries have a zero or non-finite input gradient",
        meaning="gradient attacks cannot move those queries, so the white-box robust mAP may be far too high",
        advice="state non-differentiable preprocessing with wrap_model(..., preprocess=fn, bpda=True), expose the "
        "logits (output='preactivation'), and trust the gradient-free stage (Square) over PgA here",
    )


def stochastic_check(model: nn.Module, images: Tensor) -> MaskingFlag:
    """Encode ``images`` twice: the share of queries whose logits differ beyond float noise."""
    with eval_mode(model), torch.no_grad():
        first, second = model.preactivation(images).float(), model.preactivation(images).float()
    scale = 1e-4 * (1 + first.abs().amax(1))
    moved = ((first - second).abs().amax(1) > scale) | (binarize(first) != binarize(second)).any(1)
    share = float(moved.float().mean()) if len(moved) else 0.0
    return MaskingFlag(
        name="stochastic-output",
        value=share,
        threshold=STOCHASTIC_SHARE,
        fired=share > STOCHASTIC_SHARE,
        measured=f"{share:.0%} of queries get different logits from two encodings of the same image",
        meaning="the model is random: one gradient sample misleads a white-box attack",
        advice="attack with expectation over transformation (attack option eot, e.g. --attack-options "
        '\'{"pga": {"eot": 10}}\') and score more than one encoding',
    )


def query_beats_white_box(
    white_box: Sequence[Sequence[float]], query: Sequence[Sequence[float]]
) -> MaskingFlag:
    """Per-query AP of the white-box attacks and of the gradient-free ones (rows: attacks or stages; nan: not
    run on that query): the share of queries where the best gradient-free AP is lower than every white-box AP
    by more than :data:`QUERY_WINS_MARGIN`."""
    wb = None
    if len(white_box):
        with warnings.catch_warnings():  # a query no white-box stage ran on stays nan: it cannot count
            warnings.simplefilter("ignore", RuntimeWarning)
            wb = np.nanmin(np.asarray(white_box, dtype=np.float64), axis=0)
    qb = np.asarray(query, dtype=np.float64)
    if wb is None or not len(qb):
        share = 0.0
    else:
        with np.errstate(invalid="ignore"):
            best = np.where(
                np.isnan(qb).all(0), np.inf, np.nanmin(np.where(np.isnan(qb), np.inf, qb), axis=0)
            )
        share = float(np.mean(best < wb - QUERY_WINS_MARGIN)) if len(wb) else 0.0
    return MaskingFlag(
        name="query-beats-white-box",
        value=share,
        threshold=QUERY_WINS_SHARE,
        fired=share > QUERY_WINS_SHARE,
        measured=f"on {share:.0%} of queries a gradient-free attack went lower than every gradient attack "
        f"(by more than {QUERY_WINS_MARGIN} AP)",
        meaning="the gradients point the wrong way (masked or obfuscated)",
        advice="the robust mAP already takes the lower AP; look for non-differentiable or saturating parts of the "
        "model and attack them with BPDA, and raise the gradient-free budget",
    )


def sweep_check(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    banks: tuple[CodeBank, CodeBank],
    eps: float,
    topk: int | None,
    seed: int,
    steps: int = 20,
) -> MaskingFlag:
    """PgA-dagger (``steps`` steps) at eps, 2 eps and 4 eps, and its random start alone (0 steps) at eps: flags
    when the mAP does not fall from eps to 4 eps, or when the steps gain nothing over the random start (a sound
    attack gains from both; on a model that hides its gradients the steps go nowhere)."""
    reference, database = banks

    def mean_ap(attack_eps: float, attack_steps: int) -> float:
        attack = create_attack(
            "pga-dagger",
            model,
            eps=attack_eps,
            steps=attack_steps,
            seed=seed,
            reference=reference,
            database=database,
        )
        adversarial = attack(images, labels, indices=torch.arange(len(images)))
        with (
            eval_mode(model),
            torch.no_grad(),
        ):  # scored in eval mode, whatever mode the caller left the model in
            codes = binarize(
                attack.model.preactivation(adversarial.to(next(model.parameters()).device))
            ).cpu()
        return float(
            metrics.mean_average_precision(
                codes, database.codes.cpu(), labels.cpu(), database.labels.cpu(), topk
            )
        )

    by_eps = [mean_ap(eps * m, steps) for m in (1, 2, 4)]
    start_only = mean_ap(eps, 0)
    flat_eps = by_eps[2] > by_eps[0] - 0.01
    flat_steps = by_eps[0] > start_only - 0.01
    values = ", ".join(f"{v:.4f}" for v in by_eps)
    return MaskingFlag(
        name="flat-sweep",
        value=start_only - by_eps[0],
        threshold=0.01,
        fired=flat_eps or flat_steps,
        measured=f"PgA-dagger mAP at eps x1 / x2 / x4: {values}; its random start alone {start_only:.4f}",
        meaning="the mAP does not fall as the attack grows stronger (more eps, or steps beyond the random "
        "start), a sign of masked gradients",
        advice="an attack that does not gain from a larger budget is not reaching the model: check the other flags "
        "and attack the model's real decision function (BPDA, EoT, the gradient-free stage)",
    )


def fired(flags: Sequence[MaskingFlag]) -> list[MaskingFlag]:
    return [f for f in flags if f.fired]


def stage_aps(outcome: AttackOutcome) -> tuple[list[list[float]], list[list[float]]]:
    """The robust cascade's per-query AP after each stage, split into gradient stages and gradient-free ones."""
    stages = outcome.stages or {}
    gradient_free = {"square"}
    wb = [v for k, v in stages.items() if k.partition(":")[0] not in gradient_free]
    qb = [v for k, v in stages.items() if k.partition(":")[0] in gradient_free]
    return [[math.nan if v is None else v for v in row] for row in wb], [
        [math.nan if v is None else v for v in row] for row in qb
    ]


def run_checks(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    banks: tuple[CodeBank, CodeBank],
    outcomes: Sequence[AttackOutcome],
    eps: float,
    topk: int | None,
    seed: int,
    sweep: bool = False,
    sweep_queries: int = 64,
) -> list[MaskingFlag]:
    """Every check on a run: the gradient and stochasticity checks on ``images`` (with their pharos codes as
    anchors), the gradient-free-versus-white-box comparison over ``outcomes`` (when a gradient-free attack or
    stage ran), and, when ``sweep``, the eps / steps sweep on the first ``sweep_queries`` queries."""
    from robusthash.codes import pharos_code

    reference, database = banks
    device = next(model.parameters()).device
    anchor = pharos_code(labels.to(device), reference.codes.to(device), reference.labels.to(device))
    flags = [gradient_check(model, images.to(device), anchor), stochastic_check(model, images.to(device))]
    white_box: list[list[float]] = []
    query: list[list[float]] = []
    for outcome in outcomes:
        if outcome.stages:
            wb, qb = stage_aps(outcome)
            white_box += wb
            query += qb
        elif outcome.threat_model == "white-box":
            white_box.append(outcome.scores.ap)
        elif outcome.threat_model == "query":
            query.append(outcome.scores.ap)
    if query and white_box:
        flags.append(query_beats_white_box(white_box, query))
    if sweep and len(images):
        part = slice(0, sweep_queries)
        flags.append(sweep_check(model, images[part], labels[part], banks, eps, topk, seed))
    return flags
