"""Masked gradients: each check fires on a model built to trip it and stays quiet on a plain model; BPDA and
EoT attack such models properly; the robust protocol's gradient-free stage reaches what gradients cannot."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robusthash import metrics
from robusthash.attacks import CodeBank, create_attack
from robusthash.codes import pharos_code
from robusthash.evaluation import encode, encode_images
from robusthash.masking import gradient_check, query_beats_white_box, stochastic_check, sweep_check
from robusthash.models import wrap_model
from robusthash.robustness import AttackSuite, evaluate_attacks


class Logits(nn.Module):
    """A hashing model as a plain module that returns its logits, optionally with input noise."""

    def __init__(self, model: nn.Module, noise: float = 0.0) -> None:
        super().__init__()
        self.model, self.noise = model, noise

    def forward(self, x):
        if self.noise:
            x = (x + self.noise * torch.randn_like(x)).clamp(0, 1)
        return self.model.preactivation(x)


def levels(x):
    """Rounding to the 256 pixel levels: the image an attack makes survives it, its gradient does not."""
    return torch.round(x * 255) / 255


@pytest.fixture(scope="module")
def models(toy):
    data, model = toy
    model.eval()
    shape = data.image_shape
    return data, {
        "plain": model,
        "masked": wrap_model(Logits(model), "preactivation", image_shape=shape, preprocess=levels),
        "bpda": wrap_model(Logits(model), "preactivation", image_shape=shape, preprocess=levels, bpda=True),
        "noisy": wrap_model(Logits(model, noise=0.15), "preactivation", image_shape=shape),
    }


def _queries(data, n=12):
    x, y, _ = data.query.batch(torch.arange(n))
    return x, y


def _banks(data, model):
    return CodeBank(encode(model, data.train), data.train.labels), CodeBank(
        encode(model, data.database), data.database.labels
    )


def test_zero_gradient_check(models):
    data, m = models
    x, y = _queries(data)
    reference, _ = _banks(data, m["plain"])
    anchor = pharos_code(y, reference.codes, reference.labels)
    masked = gradient_check(m["masked"], x, anchor)
    assert masked.fired and masked.value == 1.0
    for name in ("plain", "bpda"):
        flag = gradient_check(m[name], x, anchor)
        assert not flag.fired and flag.value == 0.0, name


def test_bpda_differentiates_the_preprocessing_as_the_identity(models):
    data, m = models
    x, _ = _queries(data, 4)
    a = x.clone().requires_grad_(True)
    (through_bpda,) = torch.autograd.grad(m["bpda"].preactivation(a).sum(), a)
    b = levels(x).requires_grad_(True)
    (at_the_processed_image,) = torch.autograd.grad(m["plain"].preactivation(b).sum(), b)
    assert torch.equal(through_bpda, at_the_processed_image)
    assert torch.equal(m["bpda"].preactivation(x), m["masked"].preactivation(x))


def test_stochastic_check(models):
    data, m = models
    x, _ = _queries(data)
    assert stochastic_check(m["noisy"], x).fired
    assert not stochastic_check(m["plain"], x).fired


def test_query_beats_white_box_by_hand():
    nan = math.nan
    # query 0: white-box best 0.4, gradient-free 0.1 -> a win; query 1: 0.2 against 0.3 -> none;
    # query 2: gradient-free not run -> none; query 3: 0.5 against 0.48 -> inside the margin
    white_box = [[0.5, 0.2, 0.3, 0.6], [0.4, nan, 0.9, 0.5]]
    query = [[0.1, 0.3, nan, 0.48]]
    flag = query_beats_white_box(white_box, query)
    assert flag.value == pytest.approx(0.25) and flag.fired
    assert not query_beats_white_box(white_box, [[0.6, 0.6, 0.6, 0.6]]).fired


def test_sweep_check(models):
    data, m = models
    x, y = _queries(data)
    banks = _banks(data, m["plain"])
    assert sweep_check(m["masked"], x, y, banks, 32 / 255, None, seed=0, steps=20).fired
    assert not sweep_check(m["plain"], x, y, banks, 32 / 255, None, seed=0, steps=20).fired


def test_eot_lowers_the_map_of_a_random_model(models):
    data, m = models
    x, y = _queries(data, 30)
    reference, database = _banks(data, m["plain"])

    def attacked_map(eot):
        torch.manual_seed(0)  # the model's noise
        attack = create_attack(
            "pga", m["noisy"], reference=reference, database=database, eps=32 / 255, steps=20, eot=eot
        )
        adv = attack(x, y)
        codes = encode_images(m["plain"], adv)  # scored on the model without its noise
        return metrics.mean_average_precision(codes, database.codes, y, database.labels)

    assert attacked_map(8) < attacked_map(1) - 0.02


def test_robust_protocol_flags_a_masked_model_and_its_gradient_free_stage_breaks_it(models):
    data, m = models
    suite = AttackSuite(
        protocol="robust",
        attacks=["pga"],
        eps=32 / 255,
        steps=10,
        topk=None,
        queries=12,
        attack_options={"cascade": {"square_budget": 200}},
    )
    masked = evaluate_attacks(m["masked"], data, suite, quiet=True)
    fired = {f.name for f in masked.flags if f.fired}
    assert {"zero-gradient", "query-beats-white-box", "flat-sweep"} <= fired
    cascade = masked.attack("cascade")
    assert cascade.stages is not None and set(cascade.stages) == set(cascade.settings["stages"])
    assert (
        masked.robust_map < masked.attack("pga").map - 0.2
    )  # the gradient-free stage got what PgA could not
    from robusthash.app.report.tables import attack_table

    table = attack_table(masked)
    assert "gradient-free stage 200 queries" in table
    assert "| FLAG | zero-gradient |" in table
    plain = evaluate_attacks(m["plain"], data, suite, quiet=True)
    assert not any(f.fired for f in plain.flags), [f.line() for f in plain.flags]


class _Garbage(nn.Module):
    """Logits of a chosen kind of garbage for K = 8 bits."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        h = x.flatten(1)[:, :8] * self.scale - 0.3
        if self.kind == "nan":
            return h * float("nan")
        if self.kind == "constant":
            return torch.ones_like(h) * self.scale
        return h * 1e4  # saturated: every |h| far beyond 9


@pytest.mark.parametrize(
    ("kind", "message"),
    [("nan", "NaN or infinite logits"), ("constant", "the same code"), ("saturated", "beyond |h| = 9")],
)
def test_garbage_models_are_refused_not_scored(models, kind, message):
    from robusthash.errors import UserError
    from robusthash.evaluation import evaluate_retrieval

    data, _ = models
    model = wrap_model(_Garbage(kind), "preactivation", image_shape=data.image_shape)
    suite = AttackSuite(attacks=["pga"], steps=2, queries=8, topk=None)
    with pytest.raises(UserError, match=message.replace("|", r"\|")):
        evaluate_attacks(model, data, suite, quiet=True)
    if kind == "saturated":  # allowed on request, and clean retrieval does not need gradients
        suite.allow_saturated = True
        assert evaluate_attacks(model, data, suite, quiet=True).clean.map > 0
        evaluate_retrieval(model, data, topk=None)
    else:
        with pytest.raises(UserError, match=message):
            evaluate_retrieval(model, data, topk=None)


def test_encoders_restore_every_modules_own_mode(toy):
    """A wrapper in train mode around a shared inner model in eval mode: encoding leaves both as they were."""
    from robusthash.evaluation import check_model, encode, encode_images
    from robusthash.models import wrap_model

    data, model = toy
    images = torch.stack([data.query[i][0] for i in range(0, len(data.query), 3)])
    wrapper = wrap_model(model, output="tanh", image_shape=data.image_shape)
    wrapper.train()
    model.eval()  # after the wrapper's train(), which sets its children too
    inner_modes = [m.training for m in model.modules()]
    for run in (
        lambda: encode_images(wrapper, images),
        lambda: encode(wrapper, data.query),
        lambda: check_model(wrapper, images),
    ):
        run()
        assert wrapper.training and [m.training for m in model.modules()] == inner_modes
    wrapper.eval()
