"""The robust protocol's attack: a fixed cascade of PgA-family stages that keeps each query's worst case.

AutoAttack (Croce and Hein, ICML 2020) gives classifiers one number to trust: a fixed, parameter-free sequence of
complementary attacks, each run only on the points the previous ones did not break. Retrieval has no binary
"broken": the score is a query's AP. The cascade keeps, per query, the adversarial example of the lowest AP@topK
found so far (scored against the database, exactly as the evaluation scores it) and runs each further stage only on
the queries whose best AP is still above 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from robusthash import metrics
from robusthash.attacks.base import IterativeAttack, register_attack
from robusthash.attacks.pga import dagger_objective, pharos_objective
from robusthash.attacks.square import Square
from robusthash.codes import binarize, hamming_distance, pharos_code
from robusthash.errors import UserError
from robusthash.oracle import QueryOracle


@dataclass(frozen=True)
class Stage:
    """One stage: a loss, the code it pushes away from, where it starts.

    - ``loss``: ``dagger`` (PgA eq. 10, ``-(1/K) a^T f(x')``) or ``pga`` (PgA eq. 13, masked, margin t = -0.8).
    - ``anchor``: ``pharos`` (the query's pharos code, eqs. 7-8: a non-targeted stage) or ``target`` (minus the
      pharos code of the ``rank``-th nearest label row of the database that shares no class with the query,
      nearest in Hamming distance to the best adversarial code so far: a targeted stage toward the class the
      query is closest to leaving for, like AutoAttack's multi-targeted APGD).
    - ``start``: ``random`` (``x + U(-eps, eps)`` from the query's ``stream`` draw) or ``best`` (the best
      adversarial example so far: the stage refines it).
    - ``length``: its steps as a fraction of the cascade's ``steps`` (``name:length`` in a stage list
      overrides it); for the gradient-free ``square`` stage, its query budget as a fraction of the cascade's
      ``square_budget``.
    """

    name: str
    loss: str
    anchor: str = "pharos"
    start: str = "best"
    rank: int = 1
    stream: str = "start"
    length: float = 1.0


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("dagger", "dagger", start="random"),
        Stage("pga", "pga"),
        Stage("target", "pga", anchor="target"),
        Stage("target-2", "pga", anchor="target", rank=2),
        Stage("dagger-target", "dagger", anchor="target"),
        Stage("dagger-restart", "dagger", start="random", stream="restart"),
        Stage("pga-restart", "pga", start="random", stream="restart"),
        Stage("square", "square", start="random"),
    )
}
RECIPE: tuple[str, ...] = ("dagger", "target", "pga", "target-2", "square")


SCHEDULES: tuple[str, ...] = ("cosine", "constant")


def cosine_step(step: int, steps: int, eta: float) -> float:
    """The cascade's step size at ``step`` of ``steps``: ``2 eta (1 + cos(pi step / steps)) + eta / 4``, annealed
    from 4.25 eta to 0.25 eta (mean 2.25 eta). Large early steps cross the eps-ball and leave the start's basin;
    small late ones settle into a minimum that PgA's fixed eta = 1/255 steps around (the peaks compared:
    docs/choices.md, "The robust cascade's step size")."""
    return 2 * eta * (1 + math.cos(math.pi * step / max(steps, 1))) + eta / 4


def parse_stage(spec: str) -> Stage:
    """A stage by name, ``name`` or ``name:length`` (its steps as a fraction of the cascade's)."""
    name, _, length = spec.partition(":")
    if name not in STAGES:
        raise UserError(
            f"unknown cascade stage {name!r}; valid: {', '.join(STAGES)} (optionally name:length)"
        )
    if not length:
        return STAGES[name]
    try:
        value = float(length)
    except ValueError:
        value = -1.0
    if not 0 < value <= 10:
        raise UserError(f"cascade stage length must be a number in (0, 10], got {length!r} in {spec!r}")
    return replace(STAGES[name], length=value)


def stage_spec(stage: Stage) -> str:
    """The spec that :func:`parse_stage` reads back: the name, with ``:length`` when not the stage's own."""
    return stage.name if stage.length == STAGES[stage.name].length else f"{stage.name}:{stage.length:g}"


@register_attack
class RobustCascade(IterativeAttack):
    """Non-targeted worst case: ``stages`` of ``steps`` signed steps each, per-query minimum AP@``topk``.

    The default recipe (:data:`RECIPE`, chosen by measurement: docs/robust.md) runs PgA-dagger
    (eq. 10) from a random start, then a targeted stage toward the nearest other class, PgA's masked loss
    (eq. 13) from the best point, a targeted stage toward the second-nearest class, and a gradient-free stage:
    Square's random search (:class:`~robusthash.attacks.Square`, ``square_budget`` images per query through a
    code oracle, continuous codes) from its own stripes start, so that a model that hides its gradients cannot
    keep the per-query minimum high (AutoAttack's reason for its Square stage). Each stage runs only on
    the queries whose best AP is still above 0; a query keeps the example with the lowest AP any stage reached
    (the clean image if none lowered it), so the cascade never reports a higher per-query AP than any of its
    stages. Within a white-box stage the iterate is scored every ``check_every`` steps and a query keeps its
    best one and stops at AP 0 (:meth:`descend`). All stages use PgA's softsign surrogate derivative and the
    step sizes of :func:`cosine_step` (``schedule="constant"``: PgA's fixed eta, under which stage 1 walks
    exactly the path of :class:`~robusthash.attacks.PgADagger` with the same seed). Cost: the white-box stages'
    steps (4 x ``steps``) plus one encoding and scoring every ``check_every`` steps (about 4 PgA runs), and at
    most ``square_budget`` forward passes per query still unbroken for the gradient-free stage.

    ``topk`` must be the evaluation's mAP cut-off (the suite passes its own); needs the reference bank (pharos
    codes) and the database (scoring and targets). A query's result does not depend on its batch (per-query
    draws; the scoring is per query), but the warm-started masked stage can turn the convolution kernels'
    batch-size rounding into whole sign steps on pixels whose gradient nearly cancels: images then differ between
    batch sizes while codes and AP agree (measured on the test suite's toy model).
    """

    name: ClassVar[str] = "cascade"
    display_name: ClassVar[str] = "Robust cascade"
    test_options: ClassVar[dict[str, Any]] = {"steps": 30, "square_budget": 100}
    default_steps: ClassVar[int] = 100
    scores_itself: ClassVar[bool] = True
    paper: ClassVar[str] = "robusthash: worst-case cascade of PgA-family stages (AutoAttack-like)"

    def __init__(
        self,
        model: Any,
        *,
        topk: int | None = 1000,
        stages: tuple[str, ...] | list[str] = RECIPE,
        margin: float = -0.8,
        schedule: str = "cosine",
        square_budget: int = 1000,
        check_every: int | None = 10,
        patience: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        for name, value in (("check_every", check_every), ("patience", patience)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UserError(f"{name} must be a positive integer or None, got {value!r}")
        self.check_every = check_every
        self.patience = patience
        if not isinstance(square_budget, int) or square_budget < 1:
            raise UserError(
                f"square_budget must be a positive integer (images per query), got {square_budget!r}"
            )
        self.square_budget = square_budget
        if schedule not in SCHEDULES:
            raise UserError(f"unknown step schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        self.schedule = schedule
        if not stages:
            raise UserError(f"no cascade stage given; valid: {', '.join(STAGES)}")
        self.stages = tuple(parse_stage(s) for s in stages)
        if topk is not None and (not isinstance(topk, int) or topk < 1):
            raise UserError(f"topk must be a positive integer or None, got {topk!r}")
        self.topk = topk
        # the losses are PgA's functions (one definition of eq. 10 and eq. 13)
        if not -1.0 < margin < 0.0:
            raise UserError(f"margin t must lie in (-1, 0), got {margin}")
        self.margin = margin
        # the gradient-free stage's search, in the cascade's own ball
        ball = {"norm": "l2", "l2_eps": self.eps} if self.norm == "l2" else {"eps": self.eps}
        self._square = Square(self.model, seed=self.seed, **ball)
        self.stage_ap: dict[int, list[float]] = {}  # query index -> AP after each stage (nan: skipped)
        self._target_codes: tuple[Tensor, Tensor] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "stages": [stage_spec(s) for s in self.stages],
            "topk": self.topk,
            "margin": self.margin,
            "schedule": self.schedule,
            "check_every": self.check_every,
            "patience": self.patience,
            "square_budget": self.square_budget if any(s.loss == "square" for s in self.stages) else None,
        }

    def stage_steps(self, stage: Stage) -> int:
        """Gradient steps of a stage, or oracle images per query of the gradient-free stage."""
        if stage.loss == "square":
            return max(1, round(self.square_budget * stage.length))
        return round(self.steps * stage.length)

    def progress_units(self) -> int:
        return max(sum(self.stage_steps(s) for s in self.stages), 1)

    # ----------------------------------------------------------------- scoring and anchors
    def average_precision(self, x: Tensor, labels: Tensor) -> Tensor:
        """Per-query AP@topk of images ``x`` against the database (the evaluation's own metric)."""
        db = self.require_database()
        with torch.no_grad():
            codes = binarize(self.model.preactivation(x).float()).cpu()
        ap = metrics.average_precision(codes, db.codes.cpu(), labels.cpu(), db.labels.cpu(), self.topk)
        return torch.from_numpy(np.asarray(ap, dtype=np.float64))

    def _candidates(self) -> tuple[Tensor, Tensor]:
        """Target label rows (distinct database rows) and their pharos codes (computed once)."""
        if self._target_codes is None:
            rows = self.target_candidates()
            bank = self.require_reference()
            self._target_codes = rows, pharos_code(rows, bank.codes, bank.labels).cpu()
        return self._target_codes

    def target_anchor(self, best: Tensor, labels: Tensor, rank: int) -> Tensor:
        """Minus the pharos code of the ``rank``-th nearest candidate row disjoint from each query's labels
        (Hamming distance to the code of ``best``; ties by candidate order; the nearest available rank)."""
        rows, codes = self._candidates()
        with torch.no_grad():
            current = binarize(self.model.preactivation(best).float()).cpu()
        distance = hamming_distance(current, codes).double()
        shares = (labels.cpu().double() @ rows.double().T) > 0
        distance[shares] = float("inf")
        order = torch.sort(distance, dim=1, stable=True).indices
        available = (~shares).sum(1).clamp(min=1)
        pick = order[torch.arange(len(order)), torch.minimum(torch.full_like(available, rank), available) - 1]
        return -codes[pick].to(best.device)

    # ----------------------------------------------------------------- crafting
    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        bank = self.require_reference()
        pharos = pharos_code(labels, bank.codes, bank.labels).to(x.device, x.dtype)
        best = x.clone()
        best_ap = self.average_precision(x, labels)
        history = torch.full((len(x), len(self.stages)), float("nan"), dtype=torch.float64)
        for k, stage in enumerate(self.stages):
            rows = torch.nonzero(best_ap > 0)[:, 0]
            if len(rows) == 0:
                for _ in range(self.stage_steps(stage)):
                    self.step_done()
                continue
            on = rows.to(x.device)
            xs, ys = x[on], labels[on]
            anchor = pharos[on] if stage.anchor == "pharos" else self.target_anchor(best[on], ys, stage.rank)
            anchor = anchor.to(x.dtype)
            steps = self.stage_steps(stage)
            if stage.loss == "square":  # gradient-free: the continuous code through an oracle, no gradient
                oracle = QueryOracle(self.model, len(rows), steps, "code", continuous=True)
                adv = self._square.search(xs, anchor, indices[rows], oracle, progress=self.step_done)
                ap = self.average_precision(adv, ys)
            else:
                start = (
                    self.random_start(xs, indices[rows], stage.stream)
                    if stage.start == "random"
                    else best[on]
                )
                objective = (
                    partial(pharos_objective, margin=self.margin) if stage.loss == "pga" else dagger_objective
                )
                adv, ap = self.descend(xs, ys, anchor, objective, start, steps)
            history[rows, k] = ap
            better = ap < best_ap[rows]
            best[on[better.to(x.device)]] = adv[better.to(x.device)]
            best_ap[rows[better]] = ap[better]
        for row, index in enumerate(indices.tolist()):
            self.stage_ap[int(index)] = history[row].tolist()
        return best

    def descend(
        self, x: Tensor, labels: Tensor, anchor: Tensor, objective: Any, start: Tensor, steps: int
    ) -> tuple[Tensor, Tensor]:
        """One white-box stage: ``steps`` signed steps on ``objective(anchor o f(x'))`` from ``start``; the
        stage's result per query and its AP.

        The steps run in chunks of ``check_every`` (default 10) and every chunk's iterate is scored: a query keeps
        its best-AP iterate and stops at AP 0 (nothing is lower); with ``patience`` it also stops once that many
        chunks in a row did not lower its AP (a plateau stop, like APGD's checkpoints). ``check_every=None``:
        the last iterate, scored once. The step size follows the stage's whole schedule either way. Why these
        defaults (best iterate kept, no plateau stop): docs/cascade_stops.md."""
        cosine = self.schedule == "cosine"
        chunk = steps if self.check_every is None else self.check_every
        kept, kept_ap = start.clone(), torch.full((len(x),), float("inf"), dtype=torch.float64)
        stale = torch.zeros(len(x), dtype=torch.long)
        current, done = start.clone(), 0
        active = torch.arange(len(x))
        while done < steps and len(active):
            n = min(chunk, steps - done)
            on = active.to(x.device)
            xs, a = x[on], anchor[on].to(x.dtype)

            def loss(x_adv: Tensor, step: int, a: Tensor = a) -> Tensor:
                return objective(a * self.code_output(x_adv, 1.0, surrogate=True)).sum()

            eta = (
                (lambda step, offset=done: cosine_step(offset + step, steps, self.step_size))
                if cosine
                else None
            )
            current[on] = self.pgd(xs, loss, current[on], step_size=eta, steps=n)
            done += n
            ap = self.average_precision(current[on], labels[active])
            better = ap < kept_ap[active]
            kept[on[better.to(x.device)]] = current[on[better.to(x.device)]]
            kept_ap[active[better]] = ap[better]
            stale[active] = torch.where(better, 0, stale[active] + 1)
            keep = kept_ap[active] > 0
            if self.patience is not None:
                keep &= stale[active] < self.patience
            active = active[keep]
        for _ in range(steps - done):
            self.step_done()
        if steps == 0:
            kept_ap = self.average_precision(kept, labels)
        return kept, kept_ap
