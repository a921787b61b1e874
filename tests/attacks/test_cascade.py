"""The robust protocol's cascade: per-query minimum over its stages, stage 1 = PgA-dagger, target choice, suite."""

from __future__ import annotations

import math

import pytest
import torch

from robusthash import metrics
from robusthash.attacks import CodeBank, create_attack
from robusthash.attacks.base import surrogate_tanh
from robusthash.attacks.cascade import RECIPE, STAGES, RobustCascade, cosine_step, parse_stage, stage_spec
from robusthash.codes import pharos_code
from robusthash.errors import UserError
from robusthash.evaluation import encode, encode_images
from robusthash.robustness import AttackSuite, evaluate_attacks


@pytest.fixture(scope="module")
def setup(toy):
    data, model = toy
    reference = CodeBank(encode(model, data.train), data.train.labels)
    database = CodeBank(encode(model, data.database), data.database.labels)
    x, y, _ = data.query.batch(torch.arange(12))
    return model, reference, database, x, y


def _ap(model, images, y, database, topk=None):
    codes = encode_images(model, images)
    return torch.as_tensor(
        metrics.average_precision(codes, database.codes, y, database.labels, topk)
    ).double()


def test_cascade_keeps_the_per_query_minimum_of_its_stages(setup):
    model, reference, database, x, y = setup
    index = torch.arange(20, 32)
    cascade = create_attack(
        "cascade",
        model,
        reference=reference,
        database=database,
        eps=16 / 255,
        steps=8,
        topk=None,
        seed=2,
        schedule="constant",
    )
    ap = _ap(model, cascade(x, y, indices=index), y, database)
    clean = _ap(model, x, y, database)
    for row, i in enumerate(index.tolist()):
        stages = [v for v in cascade.stage_ap[i] if not math.isnan(v)]
        assert len(cascade.stage_ap[i]) == len(RECIPE)
        assert ap[row] <= min(stages) + 1e-12  # never above any stage it ran
        assert ap[row] == pytest.approx(min(stages + [clean[row].item()]))
    # under the constant schedule, stage 1 is PgA-dagger itself, with the same seed and steps
    dagger = create_attack("pga-dagger", model, reference=reference, eps=16 / 255, steps=8, seed=2)
    dagger_ap = _ap(model, dagger(x, y, indices=index), y, database)
    first = torch.tensor([cascade.stage_ap[i][0] for i in index.tolist()], dtype=torch.float64)
    torch.testing.assert_close(first, dagger_ap)
    assert (ap <= dagger_ap + 1e-12).all()


def test_cosine_schedule_against_a_loop(setup):
    model, reference, database, x, y = setup
    x, y = x[:3], y[:3]
    eta, eps, steps = 1 / 255, 6 / 255, 7
    sizes = [cosine_step(t, steps, eta) for t in range(steps)]
    assert sizes[0] == pytest.approx(4.25 * eta) and cosine_step(steps, steps, eta) == pytest.approx(
        0.25 * eta
    )
    assert sum(cosine_step(t, 1000, eta) for t in range(1000)) / 1000 == pytest.approx(2.25 * eta, rel=1e-2)
    cascade = create_attack(
        "cascade",
        model,
        reference=reference,
        database=database,
        eps=eps,
        steps=steps,
        stages=("dagger",),
        topk=None,
        seed=1,
    )
    adv = cascade(x, y)
    dagger = create_attack("pga-dagger", model, reference=reference, eps=eps, seed=1)
    b_star = dagger.pharos(y)
    xa = dagger.random_start(x, torch.arange(3))
    for eta_t in sizes:  # the hand-written PGD of eq. 15 with the cosine step sizes
        xa.requires_grad_(True)
        loss = -(b_star * surrogate_tanh(model.preactivation(xa))).sum() / b_star.shape[1]
        (grad,) = torch.autograd.grad(loss, xa)
        xa = torch.min(torch.max(xa.detach() + eta_t * grad.sign(), x - eps), x + eps).clamp(0, 1)
    ap_adv, ap_loop, ap_clean = (_ap(model, im, y, database) for im in (adv, xa, x))
    kept = ap_loop < ap_clean  # the cascade keeps the stage's example only where it lowered AP
    torch.testing.assert_close(adv[kept], xa[kept], atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[~kept], x[~kept])
    assert (ap_adv == torch.minimum(ap_loop, ap_clean)).all()


def test_queries_at_zero_ap_are_not_attacked_further(setup):
    model, reference, database, x, y = setup

    class Scripted(RobustCascade):
        def average_precision(self, images, labels):  # every query reads as broken once a stage ran
            ap = super().average_precision(images, labels)
            return ap * 0 if self._stages_run else ap

        def pgd(self, *args, **kwargs):
            self._stages_run = True
            return super().pgd(*args, **kwargs)

    attack = Scripted(
        model,
        reference=reference,
        database=database,
        steps=2,
        topk=None,
        stages=("dagger", "pga", "dagger-restart"),
    )
    attack._stages_run = False
    attack(x, y)
    for i in range(len(x)):
        first, *rest = attack.stage_ap[i]
        assert first == 0.0 and all(math.isnan(v) for v in rest)


def test_target_anchor_against_a_loop(setup):
    model, reference, database, x, y = setup
    attack = create_attack("cascade", model, reference=reference, database=database)
    rows = torch.unique(database.labels, dim=0)
    codes = pharos_code(rows, reference.codes, reference.labels)
    current = encode_images(model, x)
    for rank in (1, 2):
        anchor = attack.target_anchor(x, y, rank)
        for q in range(len(x)):
            allowed = [j for j in range(len(rows)) if (rows[j] * y[q]).sum() == 0]
            ordered = sorted(allowed, key=lambda j: (int((current[q] != codes[j]).sum()), j))
            assert torch.equal(anchor[q], -codes[ordered[min(rank, len(ordered)) - 1]])


def test_stage_table_and_options():
    assert set(RECIPE) <= set(STAGES) and RECIPE[0] == "dagger"
    with pytest.raises(UserError, match="unknown cascade stage"):
        create_attack("cascade", torch.nn.Linear(2, 2), stages=("dagger", "nope"))
    for bad in ("target:0", "target:x", "target:-1"):
        with pytest.raises(UserError, match="stage length"):
            create_attack("cascade", torch.nn.Linear(2, 2), stages=("dagger", bad))
    attack = create_attack(
        "cascade", torch.nn.Linear(2, 2), steps=10, stages=("dagger", "target:0.5", "pga:1")
    )
    assert [attack.stage_steps(s) for s in attack.stages] == [10, 5, 10] and attack.progress_units() == 25
    assert attack.describe()["stages"] == ["dagger", "target:0.5", "pga"]
    assert [parse_stage(stage_spec(s)) for s in attack.stages] == list(attack.stages)
    with pytest.raises(UserError, match="topk"):
        create_attack("cascade", torch.nn.Linear(2, 2), topk=0)
    with pytest.raises(UserError, match="step schedule"):
        create_attack("cascade", torch.nn.Linear(2, 2), schedule="linear")


def test_robust_protocol_runs_the_cascade_first_with_the_suite_topk(toy):
    data, model = toy
    suite = AttackSuite(attacks=["pga"], protocol="robust", steps=3, queries=6, topk=7, gallery_queries=0)
    assert suite.attacks == ["cascade", "pga"] and suite.options("cascade")["topk"] == 7
    assert AttackSuite(protocol="robust").attacks == ["cascade"]
    assert "topk" not in suite.options("pga")
    run = evaluate_attacks(model, data, suite, quiet=True)
    robust, pga = run.attacks
    assert robust.settings["topk"] == 7 and robust.settings["stages"] == list(RECIPE)
    assert run.robust_ap == [min(a, b) for a, b in zip(robust.scores.ap, pga.scores.ap, strict=True)]


@pytest.mark.parametrize(("check_every", "patience"), [(5, None), (1, 3), (None, None)])
def test_chunked_descent_against_a_per_query_loop(setup, check_every, patience):
    """A white-box stage scores its iterate every ``check_every`` steps and keeps each query's best, stops a query
    at AP 0 and, with ``patience``, after that many scorings without a lower AP (the rule written out per query)."""
    model, reference, database, x, y = setup
    eps, steps, eta = 24 / 255, 11, 12 / 255  # steps of half the ball: AP goes up and down between scorings
    cascade = create_attack(
        "cascade",
        model,
        reference=reference,
        database=database,
        eps=eps,
        steps=steps,
        stages=("dagger",),
        topk=None,
        seed=4,
        schedule="constant",
        check_every=check_every,
        patience=patience,
        step_size=eta,
    )
    adv = cascade(x, y)
    dagger = create_attack("pga-dagger", model, reference=reference, eps=eps, seed=4)
    b_star = dagger.pharos(y)
    start = dagger.random_start(x, torch.arange(len(x)))
    clean = _ap(model, x, y, database)
    not_last = 0
    for i in range(len(x)):
        xa, xi = start[i : i + 1].clone(), x[i : i + 1]
        best, best_ap, stale = xi, math.inf, 0
        for t in range(steps):
            xa.requires_grad_(True)
            loss = -(b_star[i : i + 1] * surrogate_tanh(model.preactivation(xa))).sum() / b_star.shape[1]
            (grad,) = torch.autograd.grad(loss, xa)
            xa = torch.min(torch.max(xa.detach() + grad.sign() * eta, xi - eps), xi + eps).clamp(0, 1)
            if (
                check_every is None
                and t + 1 < steps
                or check_every
                and (t + 1) % check_every
                and t + 1 < steps
            ):
                continue
            ap = _ap(model, xa, y[i : i + 1], database).item()
            if ap < best_ap:
                best, best_ap, stale = xa.clone(), ap, 0
            else:
                stale += 1
            last_ap = ap
            if best_ap == 0 or patience is not None and stale >= patience:
                break
        expected_ap = min(best_ap, clean[i].item())
        assert cascade.stage_ap[i][0] == pytest.approx(best_ap)
        assert _ap(model, adv[i : i + 1], y[i : i + 1], database).item() == pytest.approx(expected_ap)
        if best_ap < clean[i]:
            torch.testing.assert_close(adv[i : i + 1], best, atol=1e-5, rtol=0)
        not_last += last_ap > best_ap
    assert check_every is None or not_last, (
        "no query's best iterate came before its last: the case is not built"
    )
