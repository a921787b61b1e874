"""The attack framework and every attack: contract tests over the registry, formulas against loops."""

from __future__ import annotations

import re

import pytest
import torch

from robusthash import metrics
from robusthash.attacks import (
    ATTACKS,
    CodeBank,
    alpha_schedule,
    create_attack,
    list_attacks,
    project_linf,
    stable_tanh,
)
from robusthash.attacks.base import surrogate_tanh
from robusthash.attacks.sdha import surrogate_distance
from robusthash.codes import pharos_code
from robusthash.errors import UserError
from robusthash.evaluation import encode, encode_images
from robusthash.models.prototype import PrototypeNet

TRAIN = {}  # the toy training split, for attacks that learn from images (set by ``setup``)


@pytest.fixture(scope="module")
def setup(toy):
    data, model = toy
    TRAIN["split"] = data.train
    reference = CodeBank(encode(model, data.train), data.train.labels)
    database = CodeBank(encode(model, data.database), data.database.labels)
    x, y, _ = data.query.batch(torch.arange(len(data.query)))
    return model, reference, database, x, y


def _attack(name, model, reference, database, **kw):
    attack = create_attack(
        name, model, reference=reference, database=database, **{**ATTACKS.get(name).test_options, **kw}
    )
    return attack.fit(train=TRAIN["split"])


# the library's attacks: a throw-away attack another test module registers (named "test-...") is not one of them,
# whichever order the modules are collected in
LIBRARY_ATTACKS = [name for name in list_attacks() if not name.startswith("test-")]


@pytest.mark.parametrize("name", LIBRARY_ATTACKS)
def test_attack_contract(name, setup):
    model, reference, database, x, y = setup
    x_before, y_before = x.clone(), y.clone()
    model.train()  # the attack must put the model in eval mode and restore every module's own mode afterwards
    model.backbone.eval()
    flags = [p.requires_grad for p in model.parameters()]
    attack = _attack(name, model, reference, database, eps=32 / 255, seed=3, batch_size=7)
    adv = attack(x, y)
    assert model.training and not model.backbone.training
    assert [p.requires_grad for p in model.parameters()] == flags
    model.eval()
    assert torch.equal(x, x_before) and torch.equal(y, y_before)  # inputs untouched
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    # inside the attack's ball: the suite's 32/255, or the whole range for an unbounded attack (ProS-GAN)
    ball = attack.describe()["eps"]
    assert ball in (32 / 255, 1.0) and (adv - x).abs().max() <= ball + 1e-6
    assert torch.equal(attack.project(adv, x), adv)  # a fixed point of the attack's own projection
    again = _attack(name, model, reference, database, eps=32 / 255, seed=3, batch_size=7)(x, y)
    assert torch.equal(adv, again)  # same seed, same result


@pytest.mark.parametrize("name", LIBRARY_ATTACKS)
def test_attack_hurts_retrieval(name, setup):
    model, reference, database, x, y = setup
    attack = _attack(name, model, reference, database, eps=32 / 255)
    targets = attack.choose_targets(y, torch.arange(len(y))) if attack.targeted else None
    adv = attack(x, y, targets)
    clean_codes, adv_codes = encode_images(model, x), encode_images(model, adv)
    clean_map = metrics.mean_average_precision(clean_codes, database.codes, y, database.labels)
    adv_map = metrics.mean_average_precision(adv_codes, database.codes, y, database.labels)
    assert adv_map < clean_map - 0.2, (clean_map, adv_map)
    if targets is not None:
        assert not ((targets @ y.T).diag() > 0).any()  # targets share no class with the query
        t_clean = metrics.targeted_map(clean_codes, database.codes, targets, database.labels)
        t_adv = metrics.targeted_map(adv_codes, database.codes, targets, database.labels)
        assert t_adv > t_clean + 0.2


def test_pga_objective_matches_eq_13_and_eq_10():
    torch.manual_seed(0)
    u = torch.rand(5, 12) * 2 - 1
    attack = create_attack("pga", torch.nn.Linear(1, 1), margin=-0.8)
    got = attack.objective(u)
    for i in range(5):
        t = -0.8
        m = [1.0 if u[i, k] > t else 0.0 for k in range(12)]
        omega = [float(u[i, k] - 2 * t) if u[i, k] > t else -t * t for k in range(12)]
        pi = sum(m)
        want = -sum(m[k] * omega[k] * float(u[i, k]) for k in range(12)) / pi
        assert got[i].item() == pytest.approx(want, rel=1e-6)
    dagger = create_attack("pga-dagger", torch.nn.Linear(1, 1))
    torch.testing.assert_close(dagger.objective(u), -u.sum(1) / 12)


def test_constant_omega_and_saat_objectives_against_loops():
    torch.manual_seed(1)
    u = (torch.rand(4, 10) * 2 - 1).requires_grad_(True)
    for name, options, t, t_omega in [("pga", {"omega": "constant"}, -0.8, -0.8), ("saat", {}, -0.5, -1.0)]:
        attack = create_attack(name, torch.nn.Linear(1, 1), **options)
        (grad,) = torch.autograd.grad(attack.objective(u).sum(), u)
        values = attack.objective(u.detach())
        u_ = u.detach()
        for i in range(4):
            m = [float(u_[i, k] > t) for k in range(10)]
            omega = [float(u_[i, k]) - 2 * t_omega if m[k] else -t * t for k in range(10)]
            pi = sum(m)
            want = -sum(m[k] * omega[k] * float(u_[i, k]) for k in range(10)) / pi
            assert values[i].item() == pytest.approx(want, rel=1e-6)
            # omega is a constant weight: d/du_k = -m_k omega_k / pi
            for k in range(10):
                assert grad[i, k].item() == pytest.approx(-m[k] * omega[k] / pi, rel=1e-6, abs=1e-9)


def test_bad_omega_is_named():
    with pytest.raises(UserError, match="unknown omega 'sometimes'; valid: differentiated, constant"):
        create_attack("pga", torch.nn.Linear(1, 1), omega="sometimes")


def test_pga_objective_pulls_active_bits_to_the_margin():
    u = torch.tensor([[0.5, -0.5, -0.9]], requires_grad=True)
    attack = create_attack("pga", torch.nn.Linear(1, 1), margin=-0.8)
    attack.objective(u).sum().backward()
    # ascent direction lowers the active bits (u > t), the bit already past the margin gets no gradient
    assert u.grad[0, 0] < u.grad[0, 1] < 0 and u.grad[0, 2] == 0


def test_pga_uses_the_pharos_code_of_the_reference_bank(setup):
    model, reference, database, x, y = setup
    attack = _attack("pga", model, reference, database)
    torch.testing.assert_close(attack.pharos(y), pharos_code(y, reference.codes, reference.labels, "pga"))


def test_stable_tanh_keeps_gradient_where_tanh_saturates():
    h = torch.tensor([0.5, 12.0, -20.0], requires_grad=True)
    stable_tanh(h).sum().backward()
    plain = torch.tensor([0.5, 12.0, -20.0], requires_grad=True)
    torch.tanh(plain).sum().backward()
    assert plain.grad[1] == 0 and plain.grad[2] == 0  # float32 underflow: the bug this guards against
    assert (h.grad > 0).all()
    assert h.grad[0].item() == pytest.approx(1 / torch.cosh(torch.tensor(0.5)).item() ** 2, rel=1e-5)
    torch.testing.assert_close(stable_tanh(h.detach()), torch.tanh(h.detach()))
    s = torch.tensor([0.5, -30.0], requires_grad=True)
    surrogate_tanh(s).sum().backward()
    torch.testing.assert_close(s.grad, 1 / (1 + s.detach().abs()) ** 2)


def test_pga_keeps_flipping_bits_of_a_saturated_model(setup):
    model, reference, database, x, y = setup
    import copy

    saturated = copy.deepcopy(model)
    with torch.no_grad():
        saturated.hash_layer.weight.mul_(40)  # |h| in the tens: float32 tanh is exactly +-1
        saturated.hash_layer.bias.mul_(40)
        assert (saturated.preactivation(x).abs() > 10).float().mean() > 0.5
    ref = CodeBank(encode_images(saturated, x), y)

    def flipped(model_, **kw):
        adv = create_attack("pga", model_, reference=ref, steps=30, eps=32 / 255, **kw)(x, y)
        return (encode_images(model_, adv) != encode_images(model_, x)).float().sum(1).mean().item()

    unscaled = flipped(model)
    surrogate, exact = flipped(saturated), flipped(saturated, surrogate_gradient=False)
    assert surrogate > 2 * exact and surrogate > 0.5 * unscaled


def test_sdha_surrogate_matches_the_published_per_pair_formula():
    torch.manual_seed(1)
    q = torch.rand(4, 10) * 2 - 1
    r = torch.where(torch.rand(6, 10) < 0.5, -1.0, 1.0)
    got = surrogate_distance(q, r, 5.0)
    for i in range(4):
        for j in range(6):
            sig = torch.sigmoid(5 * q[i] * r[j])
            want = 0.5 * ((q[i] - r[j]).abs() * sig).sum() + (1 - sig).sum()
            assert got[i, j].item() == pytest.approx(want.item(), rel=1e-5)


def test_hag_objective_formula():
    attack = create_attack("hag", torch.nn.Linear(1, 1))
    u = torch.tensor([[0.9, -0.2, 0.6, -0.7]])
    b = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    # bits with |u - b| < 1.5: 0 (0.1), 1 (1.2), 3 (0.3); bit 2 (1.6) is masked out
    agreement = (0.9 * 1 + -0.2 * 1 + -0.7 * -1) / 3
    want = (agreement + 1) ** 2 + (u.mean()) ** 2
    assert attack.objective(u, b).item() == pytest.approx(want.item(), rel=1e-6)


def test_anchor_codes_vote_over_items_with_the_exact_target_label():
    codes = torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, -1.0], [-1.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    db = CodeBank(codes, labels)
    dhta = create_attack("dhta", torch.nn.Linear(1, 1), database=db)
    dhta.n_anchor = 2  # both items of label [0, 1]: their codes agree
    assert dhta.anchor_codes(torch.tensor([[0.0, 1.0]])).tolist() == [[1.0, -1.0]]
    p2p = create_attack("p2p", torch.nn.Linear(1, 1), database=db)
    assert p2p.anchor_codes(torch.tensor([[1.0, 0.0]])).tolist() == [[1.0, 1.0]]
    targets = p2p.choose_targets(torch.tensor([[1.0, 0.0]] * 10))
    assert (targets == torch.tensor([0.0, 1.0])).all()  # the only database label with no class in common


def test_dhta_targets_are_label_rows_occurring_more_than_n_t_times():
    """The DHTA code's rule written out: ``Counter(database label strings)``, rows with count > n_t."""
    counts = {(1.0, 0.0, 0.0): 9, (0.0, 1.0, 0.0): 10, (0.0, 0.0, 1.0): 2, (0.0, 1.0, 1.0): 1}
    labels = torch.tensor([row for row, n in counts.items() for _ in range(n)])
    db = CodeBank(torch.ones(len(labels), 4), labels)
    for name, n_t in (("dhta", 9), ("p2p", 1)):
        got = create_attack(name, torch.nn.Linear(1, 1), database=db).target_candidates()
        expected = sorted(row for row, n in counts.items() if n > n_t)
        assert sorted(tuple(r) for r in got.tolist()) == expected


def test_dhta_anchor_items_with_replacement_as_the_dhta_code():
    """``anchor_draw="with-replacement"``: n_t draws from the target's items, repeats allowed
    (``np.random.choice(items, size=n_t)``), voted by sign of the sum; the default draws n_t distinct items."""
    g = torch.Generator().manual_seed(0)
    codes = torch.where(torch.rand(12, 16, generator=g) < 0.5, -1.0, 1.0)
    labels = torch.eye(2)[torch.tensor([0] * 10 + [1] * 2)]
    db = CodeBank(codes, labels)
    target = torch.tensor([[1.0, 0.0]])
    drawn = create_attack("dhta", torch.nn.Linear(1, 1), database=db, anchor_draw="with-replacement")
    items = torch.randint(10, (9,), generator=drawn.generator(0, "anchor"))
    vote = codes[items].sum(0)
    assert drawn.anchor_codes(target).tolist() == [torch.where(vote >= 0, 1.0, -1.0).tolist()]
    distinct = create_attack("dhta", torch.nn.Linear(1, 1), database=db)
    items = torch.randperm(10, generator=distinct.generator(0, "anchor"))[:9]
    assert len(set(items.tolist())) == 9
    vote = codes[items].sum(0)
    assert distinct.anchor_codes(target).tolist() == [torch.where(vote >= 0, 1.0, -1.0).tolist()]
    with pytest.raises(UserError, match="anchor_draw must be one of distinct, with-replacement"):
        create_attack("dhta", torch.nn.Linear(1, 1), anchor_draw="bootstrap")


def test_alpha_schedule_matches_dhta_switch_points():
    got = {s: alpha_schedule(s, 2000) for s in (0, 999, 1000, 1199, 1200, 1400, 1600, 1799, 1800, 1999)}
    assert got == {
        0: 0.1,
        999: 0.1,
        1000: 0.2,
        1199: 0.2,
        1200: 0.3,
        1400: 0.5,
        1600: 0.7,
        1799: 0.7,
        1800: 1.0,
        1999: 1.0,
    }


def test_projection():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert project_linf(torch.tensor([-1.0, 0.9, 0.99]), x, 0.1).tolist() == pytest.approx([0.0, 0.6, 0.99])


def test_missing_bank_and_bad_names_are_user_errors(setup):
    model, _, _, x, y = setup
    with pytest.raises(UserError, match="reference code bank"):
        create_attack("pga", model, steps=1)(x, y)
    with pytest.raises(UserError, match="fit"):
        create_attack("tha", model, steps=1, database=CodeBank(x.new_ones(2, 16), y[:1].repeat(2, 1)))(x, y)
    with pytest.raises(UserError, match="no target label: no database label row qualifies"):
        create_attack("p2p", model, steps=1, database=CodeBank(x.new_ones(1, 16), y[:1]))(x, y)
    with pytest.raises(UserError, match="database"):
        create_attack("dhta", model, steps=1)(x, y)
    with pytest.raises(UserError, match="unknown attack 'fgsm'; valid: "):
        create_attack("fgsm", model)
    with pytest.raises(UserError, match="bad option"):
        create_attack("pga", model, temperature=3)


@pytest.mark.parametrize("name", LIBRARY_ATTACKS)
def test_a_query_does_not_depend_on_batch_size_or_company(name, setup):
    """Per-query randomness and fixed-shape model calls: bit-identical images for batch sizes 1, 7 and 128 and
    for two disjoint shards in either order (the CPU kernels themselves differ by ~1e-6 between batch sizes,
    which HAG's SGD at lr 100 amplified into whole pixels on an Intel Xeon before every call ran on blocks of
    ``block_rows`` images)."""
    model, reference, database, x, y = setup
    x, y = x[:9], y[:9]
    index = torch.arange(100, 109)  # the queries' positions in some larger query set
    fitted = _attack(name, model, reference, database, eps=32 / 255, seed=4).fitted_state()

    def attack_with(batch_size: int):  # what the attack learned does not depend on its crafting batch size
        attack = create_attack(
            name,
            model,
            reference=reference,
            database=database,
            **{**ATTACKS.get(name).test_options, "eps": 32 / 255, "seed": 4, "batch_size": batch_size},
        )
        attack.load_fitted_state(fitted)
        return attack

    runs = [attack_with(b)(x, y, indices=index) for b in (1, 7, 128)]
    for r in runs[1:]:
        assert torch.equal(r, runs[0]), (r - runs[0]).abs().max()
    for first, second in [(slice(0, 4), slice(4, 9)), (slice(4, 9), slice(0, 4))]:
        attack = attack_with(3)
        a = attack(x[first], y[first], indices=index[first])
        b = attack(x[second], y[second], indices=index[second])
        assert torch.equal(torch.cat([a, b]), torch.cat([runs[0][first], runs[0][second]]))
    other_seed = _attack(name, model, reference, database, eps=32 / 255, seed=5)(x, y, indices=index)
    if name in ("pga", "pga-dagger") or ATTACKS.get(name).targeted:  # attacks with random draws
        assert not torch.equal(other_seed, runs[0])


def test_fitted_attack_saves_and_reloads(setup, tmp_path):
    model, reference, database, x, y = setup
    tha = _attack("tha", model, reference, database)
    tha.save(tmp_path / "tha.pt")
    fresh = create_attack(
        "tha", model, reference=reference, database=database, **ATTACKS.get("tha").test_options
    )
    fresh.load(tmp_path / "tha.pt")
    index = torch.arange(len(y))
    assert torch.equal(tha(x, y, indices=index), fresh(x, y, indices=index))
    with pytest.raises(UserError, match="does not hold a fitted pga"):
        create_attack("pga", model).load(tmp_path / "tha.pt")


def test_images_outside_the_unit_range_are_refused(setup):
    model, reference, database, x, y = setup
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        _attack("pga", model, reference, database)(x * 2, y)
    with pytest.raises(UserError, match="eps"):
        create_attack("pga", model, eps=float("nan"))


def test_random_start_on_the_cpu_is_the_per_query_reference(setup):
    from robusthash.attacks import derive_seed

    model, reference, _, x, _ = setup
    attack = create_attack("pga", model, reference=reference, eps=8 / 255, seed=5)
    indices = torch.tensor([4, 1])
    got = attack.random_start(x[:2], indices)
    for row, index in enumerate(indices.tolist()):
        noise = torch.rand(
            x.shape[1:], generator=torch.Generator().manual_seed(derive_seed(5, index, "start"))
        )
        assert torch.equal(got[row], (x[row] + (noise * 2 - 1) * (8 / 255)).clamp(0, 1))


@pytest.mark.parametrize("name", ["pga", "hag"])
def test_bf16_attack_runs_on_the_cpu_and_still_hurts(name, setup):
    model, reference, database, x, y = setup
    adv = _attack(name, model, reference, database, eps=16 / 255, seed=0, precision="bf16")(x, y)
    assert adv.dtype == x.dtype and (adv - x).abs().max() <= 16 / 255 + 1e-6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.preactivation(x[:2]).dtype == torch.float32  # logits stay fp32 under autocast
    clean = encode_images(model, x, precision="bf16")
    codes = encode_images(model, adv, precision="bf16")
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    before = metrics.mean_average_precision(clean, database.codes, y, database.labels)
    after = metrics.mean_average_precision(codes, database.codes, y, database.labels)
    assert after < before - 0.1


def test_unknown_precision_is_named(setup):
    model, reference, *_ = setup
    with pytest.raises(UserError, match="unknown precision 'fp16'; valid: fp32, bf16"):
        create_attack("pga", model, reference=reference, precision="fp16")


def test_nag_steps_against_a_hand_written_loop(setup):
    """NAG's update with lambda = 0 and MI-FGSM momentum, written out: g <- g + grad / |grad|_1, x -= eta sign g."""
    model, reference, database, x, y = setup
    x, y = x[:5], y[:5]
    attack = _attack("nag", model, reference, database, eps=8 / 255, steps=2, lam=0.0, momentum=1.0, seed=2)
    targets = attack.choose_targets(y, torch.arange(5))
    got = attack(x, y, targets)
    t = attack.anchor_codes(targets, torch.arange(5))
    x_adv, g = x.clone(), torch.zeros_like(x)
    for _ in range(2):
        x_adv.requires_grad_(True)
        loss = (torch.tanh(model.preactivation(x_adv)) - t).abs().mean(1).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        g = g + grad / grad.abs().flatten(1).sum(1)[:, None, None, None]
        x_adv = project_linf(x_adv.detach() - g.sign() / 255, x, 8 / 255)
    torch.testing.assert_close(got, x_adv, atol=1e-6, rtol=0)


def test_nag_input_diversity_shrinks_into_the_canvas():
    attack = create_attack("nag", torch.nn.Linear(1, 1), diversity=1.0)
    x = torch.ones(3, 1, 16, 16)
    gens = [attack.generator(i, "diversity") for i in range(3)]
    moved = attack.diverse(x, gens)
    assert moved.shape == x.shape and (moved < 1).any() and moved.sum() < x.sum()  # a zero border appears
    assert torch.equal(create_attack("nag", torch.nn.Linear(1, 1)).diverse(x, gens), x)  # p = 0: untouched
    with pytest.raises(UserError, match="diversity must be a probability"):
        create_attack("nag", torch.nn.Linear(1, 1), diversity=2)


@pytest.mark.parametrize("layout", ["compact", "official"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (1, 56), (3, 224), (3, 32), (1, 12)])
def test_prosgan_networks_fit_every_image_size(channels, size, layout):
    from robusthash.models.prosgan import build_networks

    gen, disc = build_networks(layout, channels, size, num_classes=10)
    x = torch.rand(2, channels, size, size)
    out = gen(x, torch.randn(2, 512))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert disc(out).shape == (2, 11)


def _official_prosgan_generator() -> torch.nn.Module:
    """The ProS-GAN repository's ``Generator`` (model/module.py) written out: 224 px, 3 channels, images on
    [-1, 1], returning (tanh image, mixed input)."""
    nn = torch.nn

    def norm_relu(c):
        return [nn.InstanceNorm2d(c), nn.ReLU(inplace=True)]

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(c, c, 3, 1, 1, bias=False),
                nn.InstanceNorm2d(c, affine=False),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, 1, 1, bias=False),
                nn.InstanceNorm2d(c, affine=False),
            )

        def forward(self, x):
            return x + self.main(x)

    class Labels(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(512, 128 * 14 * 14), nn.ReLU(True))
            layers, c = [], 128
            for _ in range(4):
                layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), *norm_relu(c // 2)]
                c //= 2
            self.transform = nn.Sequential(*layers, nn.Conv2d(c, 3, 3, 1, 1, bias=False))

        def forward(self, image, feature):
            label = self.transform(self.fc(feature).view(-1, 128, 14, 14))
            return torch.cat((label, image), dim=1)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.label_encoder = Labels()
            enc, c = [nn.Conv2d(6, 64, 7, 1, 3, bias=True), *norm_relu(64)], 64
            for _ in range(2):
                enc += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=True), *norm_relu(c * 2)]
                c *= 2
            self.image_encoder = nn.Sequential(*enc, *[Block(c) for _ in range(3)])
            dec = [Block(c) for _ in range(3)]
            for _ in range(2):
                dec += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), *norm_relu(c // 2)]
                c //= 2
            self.decoder = nn.Sequential(*dec)
            self.residual = nn.Sequential(nn.Conv2d(c + 3, 3, 3, 1, 1, bias=False), nn.Tanh())

        def forward(self, x, feature):
            mixed = self.label_encoder(x, feature)
            decoded = self.decoder(self.image_encoder(mixed))
            return self.residual(torch.cat([decoded, x], dim=1)), mixed

    return Generator()


def test_an_official_prosgan_generator_loads_and_computes_the_same_image():
    from robusthash.models import load_foreign_state_dict
    from robusthash.models.prosgan import build_networks

    torch.manual_seed(0)
    official = _official_prosgan_generator().eval()
    ours = build_networks("official", 3, 224)[0].eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in official.parameters())
    assert load_foreign_state_dict(ours, official.state_dict(), "prosgan-generator") == "robusthash"
    x, feature = torch.rand(2, 3, 224, 224), torch.randn(2, 512)
    with torch.no_grad():
        expected = (official(x * 2 - 1, feature)[0] + 1) / 2
        torch.testing.assert_close(ours(x, feature), expected, rtol=1e-4, atol=1e-5)
    compact = build_networks("compact", 3, 224)[0]
    with pytest.raises(UserError, match="fits no known layout of prosgan-generator"):
        load_foreign_state_dict(compact, official.state_dict(), "prosgan-generator")


@pytest.mark.parametrize("order", ["generator-first", "discriminator-first"])
def test_prosgan_generator_loss_in_the_official_units_and_update_order(setup, order):
    """G's loss written out: rec_weight * MSE on [-1, 1] images + 5 (1 - mean(tanh(h) o code)) + the LSGAN term
    (target row, real flag 0); discriminator-first: the D step comes first and G's loss sees the updated D."""
    import copy

    import torch.nn.functional as F

    from robusthash.models.prosgan import build_networks

    model, reference, database, x, y = setup
    attack = create_attack("prosgan", model, reference=reference, database=database, update_order=order)
    torch.manual_seed(0)
    prototype = PrototypeNet(y.shape[1], model.bits, label_head=True)
    gen, disc = build_networks("compact", x.shape[1], x.shape[-1], y.shape[1])
    target = attack.choose_targets(y[:8], torch.arange(8))
    reference_disc = copy.deepcopy(disc)
    with torch.no_grad():
        feature = prototype.feature(target)
        code = torch.where(prototype.hashing(feature) >= 0, 1.0, -1.0)
        x_adv = gen(x[:8], feature)
    if order == "discriminator-first":
        opt = torch.optim.Adam(reference_disc.parameters(), 1e-4, betas=(0.5, 0.999))
        real, fake = torch.zeros(8, 1), torch.ones(8, 1)
        loss = 0.5 * (
            F.mse_loss(reference_disc(x[:8]), torch.cat([y[:8], real], 1))
            + F.mse_loss(reference_disc(x_adv), torch.cat([target, fake], 1))
        )
        loss.backward()
        opt.step()
    with torch.no_grad():
        expected = (
            12.5 * ((2 * x_adv - 1) - (2 * x[:8] - 1)).pow(2).mean()
            + 5 * (1 - (torch.tanh(model.preactivation(x_adv)) * code).mean())
            + (reference_disc(x_adv) - torch.cat([target, torch.zeros(8, 1)], 1)).pow(2).mean()
        )
    opt_g = torch.optim.Adam(gen.parameters(), 1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 1e-4, betas=(0.5, 0.999))
    got = attack.train_step(gen, disc, opt_g, opt_d, prototype, x[:8], y[:8], target)
    assert got["generator"] == pytest.approx(expected.item(), rel=1e-5)


def test_prosgan_settings_stored_before_the_options_read_back_in_the_new_units():
    from robusthash.attacks.prosgan import migrate_settings

    old = {"epochs": 4, "rec_weight": 50.0, "seed": 0}
    assert migrate_settings(old, 28) == {
        "epochs": 4,
        "rec_weight": 12.5,
        "seed": 0,
        "layout": "auto",
        "update_order": "generator-first",
    }
    assert migrate_settings(old, 224)["layout"] == "compact"
    new = {"rec_weight": 50.0, "layout": "official", "update_order": "discriminator-first"}
    assert migrate_settings(new, 224) == new
    with pytest.raises(UserError, match="update_order must be one of"):
        create_attack("prosgan", torch.nn.Linear(1, 1), update_order="both")
    with pytest.raises(UserError, match="layout must be one of auto, compact, official"):
        create_attack("prosgan", torch.nn.Linear(1, 1), layout="big")


def test_prosgan_training_step_lowers_the_generator_loss(setup):
    from robusthash.models.prosgan import ProSGANDiscriminator, ProSGANGenerator  # the compact layout

    model, reference, database, x, y = setup
    attack = create_attack("prosgan", model, reference=reference, database=database, lr=1e-3)
    torch.manual_seed(0)
    prototype = PrototypeNet(y.shape[1], model.bits, label_head=True)
    gen, disc = (
        ProSGANGenerator(x.shape[1], x.shape[-1]),
        ProSGANDiscriminator(x.shape[1], x.shape[-1], y.shape[1]),
    )
    opt_g, opt_d = torch.optim.Adam(gen.parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3)
    target = attack.choose_targets(y[:8], torch.arange(8))
    losses = [
        attack.train_step(
            gen, disc, opt_g, opt_d, prototype, x[:8], y[:8], target, update_discriminator=False
        )["generator"]
        for _ in range(5)
    ]
    assert losses[-1] < losses[0]


def test_prosgan_saves_reloads_and_resumes_from_its_checkpoint(setup, tmp_path):
    model, reference, database, x, y = setup
    opts = {"epochs": 2, "prototype_steps": 20, "checkpoint": str(tmp_path / "g.pt"), "seed": 1}
    attack = _attack("prosgan", model, reference, database, **opts)
    adv = attack(x, y)
    attack.save(tmp_path / "fitted.pt")
    again = create_attack("prosgan", model, reference=reference, database=database, seed=1).load(
        tmp_path / "fitted.pt"
    )
    assert torch.equal(again(x, y), adv)  # same generator, same images
    reused = _attack("prosgan", model, reference, database, **opts)  # finished checkpoint: nothing retrained
    assert torch.equal(reused(x, y), adv)
    # the reuse reports the training time stored with the generator, not the instant it took to load it
    assert attack.recorded_fit_seconds is not None and attack.recorded_fit_seconds > 0
    assert reused.recorded_fit_seconds == pytest.approx(attack.recorded_fit_seconds)
    assert (adv - x).abs().max() > 8 / 255  # unbounded by default (faithful), measured and reported
    bounded = create_attack("prosgan", model, reference=reference, database=database, bounded=True)
    bounded.load_fitted_state(attack.fitted_state())
    assert (bounded(x, y) - x).abs().max() <= 8 / 255 + 1e-6
    with pytest.raises(UserError, match="other settings"):
        _attack("prosgan", model, reference, database, **{**opts, "rec_weight": 10.0})


@pytest.mark.parametrize("name", LIBRARY_ATTACKS)
def test_api_misuse_is_a_user_error_naming_the_shape(name, setup):
    """Every attack: labels of the wrong width or rank and images of the wrong channel count are one UserError;
    zero queries give zero images."""
    model, reference, database, x, y = setup
    attack = _attack(name, model, reference, database, eps=16 / 255)
    cases = [
        (x[:3], y[:3, :2], "labels have 2 classes, the model's code banks 3"),
        (x[:3], y[:3, 0], "labels (3,)"),
        (x[:3].repeat(1, 3, 1, 1), y[:3], "takes 1-channel images, got 3 channels"),
    ]
    for images, labels, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            attack(images, labels)
    assert attack(x[:0], y[:0]).shape == x[:0].shape


def test_l2_pgd_steps_are_gradient_directions_of_norm_eta_inside_the_l2_ball(toy):
    """norm="l2": one step moves each image by step_size along its normalised gradient (written out here), the
    random start lies in the L2 ball, and the output never leaves it; an L-inf-only attack refuses l2."""
    data, model = toy
    x, y, idx = data.query.batch(torch.arange(6))
    attack = create_attack("pga", model, eps=0.3, norm="l2", steps=1, step_size=0.05, seed=1)
    start = attack.random_start(x, idx)
    assert ((start - x).flatten(1).norm(dim=1) <= 0.3 + 1e-5).all()

    def loss(xa, step):
        return (model.preactivation(xa) ** 2).sum()

    x0 = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(x0, 0), x0)
    expected = x + 0.05 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    moved = attack.pgd(x, loss, start=x)
    assert torch.allclose(moved, expected.clamp(0, 1), atol=1e-5)
    from robusthash.attacks import CodeBank

    tx, ty, _ = data.train.batch(torch.arange(len(data.train)))
    bank = CodeBank(model.encode(tx), ty)
    out = create_attack("pga", model, eps=0.3, norm="l2", steps=5, seed=1, reference=bank)(x, y, indices=idx)
    assert ((out - x).flatten(1).norm(dim=1) <= 0.3 + 1e-5).all()
    with pytest.raises(UserError, match="runs in the L-inf ball only"):
        create_attack("nag", model, norm="l2")
