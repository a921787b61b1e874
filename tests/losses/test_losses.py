"""Each loss against its formula written out pair by pair, plus the properties it must have."""

from __future__ import annotations

import math

import pytest
import torch

from robusthash.losses import create_loss, list_losses
from robusthash.losses.csq import hash_centers, sylvester_hadamard


def _batch(seed=0, b=5, n=12, bits=8, classes=3):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(b, bits, generator=g) * 2 - 1
    labels = (torch.rand(b, classes, generator=g) < 0.4).float()
    idx = torch.randperm(n, generator=g)[:b]
    bank_u = torch.rand(n, bits, generator=g) * 2 - 1
    bank_y = (torch.rand(n, classes, generator=g) < 0.4).float()
    return u, labels, idx, bank_u, bank_y


def _prefill(loss, bank_u, bank_y):
    loss.U.copy_(bank_u)
    loss.Y.copy_(bank_y)


def test_dpsh_matches_pairwise_formula_and_gradient():
    u, y, idx, bank_u, bank_y = _batch()
    loss = create_loss("dpsh", 8, 3, 12, eta=0.3)
    _prefill(loss, bank_u, bank_y)
    u = u.requires_grad_(True)
    value = loss(u, y, idx)
    value.backward()
    # reference: the bank with the batch's rows replaced by the live outputs, every pair written out
    ref_u = u.detach().clone().requires_grad_(True)
    bank = bank_u.clone()
    labels = bank_y.clone()
    labels[idx] = y
    total = 0.0
    for i in range(len(ref_u)):
        for j in range(len(bank)):
            other = ref_u[(idx == j).nonzero()[0, 0]] if (idx == j).any() else bank[j]
            theta = 0.5 * ref_u[i] @ other
            s = float((y[i] * labels[j]).sum() > 0)
            total = total + torch.log1p(torch.exp(theta)) - s * theta
    ref = total / (len(ref_u) * len(bank)) + 0.3 * ((ref_u - ref_u.sign()) ** 2).mean()
    ref.backward()
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(u.grad, ref_u.grad)
    assert torch.equal(loss.U[idx], u.detach()) and torch.equal(loss.Y[idx], y)


def test_dph_matches_pairwise_formula():
    u, y, idx, bank_u, bank_y = _batch(1)
    loss = create_loss("dph", 8, 3, 12)
    _prefill(loss, bank_u, bank_y)
    value = loss(u, y, idx)
    bank = bank_u.clone()
    bank[idx] = u
    labels = bank_y.clone()
    labels[idx] = y
    ref = sum(
        (u[i] @ bank[j] / 8 - (1.0 if (y[i] * labels[j]).sum() > 0 else -1.0)) ** 2
        for i in range(len(u))
        for j in range(len(bank))
    ) / (len(u) * len(bank))
    assert value.item() == pytest.approx(float(ref), rel=1e-6)


def test_pairwise_losses_prefer_codes_that_respect_similarity():
    # two classes; codes that agree within a class must score lower than codes that mix them
    y = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    good = torch.tensor([[1.0] * 8] * 4 + [[-1.0] * 8] * 4) * 0.9
    bad = good[torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])]
    idx = torch.arange(8)
    for name in list_losses():
        a = create_loss(name, 8, 2, 8)
        b = create_loss(name, 8, 2, 8)
        to_input = torch.atanh if a.takes_logits else (lambda t: t)
        assert a(to_input(good), y, idx) < b(to_input(bad), y, idx), name


def test_csq_hadamard_centres_are_far_apart():
    h = sylvester_hadamard(16)
    assert torch.equal(h @ h.T, 16 * torch.eye(16))
    c = hash_centers(10, 16, torch.Generator().manual_seed(0))
    d = 0.5 * (16 - c @ c.T)
    assert d[~torch.eye(10, dtype=bool)].min() >= 8


@pytest.mark.parametrize("bits", [12, 48])
def test_csq_random_centres_when_not_a_power_of_two(bits):
    c = hash_centers(10, bits, torch.Generator().manual_seed(0))
    assert c.shape == (10, bits) and (c.sum(1) == 0).all()  # balanced
    d = 0.5 * (bits - c @ c.T)
    off = d[~torch.eye(10, dtype=bool)]
    assert off.min() >= bits / 4 and off.mean() >= bits / 2
    assert torch.equal(c, hash_centers(10, bits, torch.Generator().manual_seed(0)))


def test_csq_hadamard_plus_random_is_deephash_pytorchs_rule():
    """DeepHash-pytorch's get_hash_targets written out: the 2K rows of [H; -H], then the other centers drawn
    balanced (K/2 entries -1) up to 20 times until min distance > K/4 and mean >= K/2, the last draw kept."""
    from robusthash.losses.csq import balanced_codes

    bits, classes = 16, 50
    got = hash_centers(classes, bits, torch.Generator().manual_seed(4), rule="hadamard+random")
    h = sylvester_hadamard(bits)
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        expected = torch.cat([h, -h, balanced_codes(classes - 2 * bits, bits, g)], 0)
        d = [int((expected[i] != expected[j]).sum()) for i in range(classes) for j in range(i + 1, classes)]
        if min(d) > bits / 4 and sum(d) / len(d) >= bits / 2:
            break
    assert torch.equal(got, expected)
    assert torch.equal(got[: 2 * bits], torch.cat([h, -h], 0)) and (got[2 * bits :].sum(1) == 0).all()


@pytest.mark.parametrize("bits,classes", [(16, 50), (64, 200)])
def test_csq_farthest_keeps_the_rule_with_the_larger_minimum_distance(bits, classes):
    def spread(c):
        d = [int((c[i] != c[j]).sum()) for i in range(classes) for j in range(i + 1, classes)]
        return min(d), sum(d) / len(d)

    g = torch.Generator().manual_seed(1)
    drawn = [hash_centers(classes, bits, g, rule=r) for r in ("random", "hadamard+random")]
    got = hash_centers(classes, bits, torch.Generator().manual_seed(1))
    assert torch.equal(got, max(drawn, key=spread)) and spread(got) == max(map(spread, drawn))
    with pytest.raises(ValueError, match="center rule must be one of farthest, random"):
        hash_centers(classes, bits, g, rule="bernoulli")


def test_csq_multilabel_centre_is_sign_of_sum_and_loss_formula():
    loss = create_loss("csq", 8, 4, 0)
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    target = loss.target(y)
    assert torch.equal(target[0], loss.centers[0])
    total = loss.centers[:3].sum(0)
    assert torch.equal(target[1], torch.where(total > 0, 1.0, -1.0))
    pair = loss.centers[0] + loss.centers[1]
    assert torch.equal(target[2], torch.where(pair > 0, 1.0, torch.where(pair < 0, -1.0, loss.fill)))
    u = torch.tensor([[0.5] * 8, [-0.2] * 8, [0.1] * 8])
    p = (u + 1) / 2
    t = (target + 1) / 2
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
    assert loss(u, y, torch.arange(3)).item() == pytest.approx(
        (bce + 1e-4 * ((u.abs() - 1) ** 2).mean()).item()
    )


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize("bits", [1, 7, 48])
def test_every_loss_runs_for_any_bits_and_gives_finite_gradients(name, bits):
    if name == "csq" and bits == 1:  # 5 centers in {-1, 1}: some coincide, and CSQ says so
        with pytest.warns(UserWarning, match="minimum distance 0"):
            loss = create_loss(name, bits, 5, 20)
    else:
        loss = create_loss(name, bits, 5, 20)
    u = (torch.rand(6, bits) * 2 - 1).requires_grad_(True)
    y = torch.zeros(6, 5)
    y[torch.arange(6), torch.arange(6) % 5] = 1
    y[0] = 0  # a row with no label
    value = loss(torch.tanh(u), y, torch.arange(6))
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(u.grad).all()
    loss.epoch_start(0, 3)


def test_hashnet_weighted_likelihood_and_continuation():
    u, y, idx, bank_u, bank_y = _batch(2)
    loss = create_loss("hashnet", 8, 3, 12)
    assert loss.takes_logits and loss.beta == 1.0
    _prefill(loss, bank_u, bank_y)
    h = torch.atanh(u * 0.9)
    value = loss(h, y, idx)
    code = torch.tanh(h)
    bank = bank_u.clone()
    bank[idx] = code
    labels = bank_y.clone()
    labels[idx] = y
    terms, sims = [], []
    for i in range(len(code)):
        for j in range(len(bank)):
            theta = (10 / 8) * code[i] @ bank[j]  # alpha = 10 / K
            s = float((y[i] * labels[j]).sum() > 0)
            terms.append(torch.log1p(torch.exp(theta)) - s * theta)
            sims.append(s)
    sims = torch.tensor(sims)
    terms = torch.stack(terms)
    n1, n0 = sims.sum(), (1 - sims).sum()
    w = torch.where(sims > 0, (n0 + n1) / n1, (n0 + n1) / n0)
    assert value.item() == pytest.approx(((w * terms).sum() / (n0 + n1)).item(), rel=1e-5)
    loss.step.fill_(400)
    assert loss.beta == pytest.approx(3**0.5)
    loss.step.fill_(399)
    assert loss.beta == pytest.approx(2**0.5)  # refreshed every 200 steps


def test_dch_matches_its_formula():
    torch.manual_seed(3)
    u = torch.tanh(torch.randn(5, 6))
    y = torch.eye(3)[torch.tensor([0, 1, 0, 2, 1])]
    loss = create_loss("dch", 6, 3, 0)
    want_terms, sims = [], []
    for i in range(5):
        for j in range(5):
            cos = (u[i] @ u[j] / (u[i].norm() * u[j].norm())).clamp(max=0.99)
            d = (1 - cos) * 3
            s = float((y[i] * y[j]).sum() > 0)
            want_terms.append((s * torch.log(d / 20) + torch.log1p(20 / d)).item())
            sims.append(s)
    sims = torch.tensor(sims)
    w = sims * 25 / sims.sum() + (1 - sims) * 25 / (1 - sims).sum()
    cauchy = (w * torch.tensor(want_terms)).mean()
    quant = torch.stack(
        [
            torch.log1p((1 - (u[i].abs().sum() / (u[i].norm() * 6**0.5)).clamp(max=0.99)) * 3 / 20)
            for i in range(5)
        ]
    ).mean()
    assert loss(u, y, torch.arange(5)).item() == pytest.approx((cauchy + 0.1 * quant).item(), rel=1e-5)


def test_dsdh_w_step_is_the_ridge_minimiser():
    from robusthash.losses.dsdh import ridge_classifier

    torch.manual_seed(0)
    b = torch.where(torch.rand(6, 40) < 0.5, -1.0, 1.0)
    y = torch.eye(3)[torch.randint(0, 3, (40,))].T
    w = ridge_classifier(b, y, mu=1.0, nu=2.0).requires_grad_(True)
    objective = (y - w.T @ b).pow(2).sum() + 2.0 * w.pow(2).sum()
    (grad,) = torch.autograd.grad(objective, w)
    assert grad.abs().max() < 1e-3


def test_dsdh_b_step_is_coordinate_optimal_and_never_increases_the_objective():
    from robusthash.losses.dsdh import discrete_code_update

    torch.manual_seed(1)
    k, n, c, mu, eta = 5, 30, 3, 1.0, 2.0
    b = torch.where(torch.rand(k, n) < 0.5, -1.0, 1.0)
    w = torch.randn(k, c)
    y = torch.eye(c)[torch.randint(0, c, (n,))].T
    u = torch.tanh(torch.randn(k, n))

    def objective(codes):
        return mu * (y - w.T @ codes).pow(2).sum() + eta * (codes - u).pow(2).sum()

    new = discrete_code_update(b, w, y, u, mu, eta)
    assert objective(new) <= objective(b) + 1e-4
    # the last row was set with all other rows final: flipping any of its bits cannot help
    for i in range(n):
        flipped = new.clone()
        flipped[k - 1, i] *= -1
        assert objective(flipped) >= objective(new) - 1e-4


def test_dsdh_epoch_update_uses_only_its_own_state():
    loss = create_loss("dsdh", 8, 3, 20, update="epoch")
    torch.manual_seed(0)
    loss.preinstall(torch.tanh(torch.randn(20, 8)), torch.eye(3)[torch.arange(20) % 3])
    loss.epoch_start(0, 5)
    assert set(loss.B.unique().tolist()) == {-1.0, 1.0} and loss.W.abs().sum() > 0
    state = loss.state_dict()
    assert {"B", "W", "U", "Y"} <= set(state)


def test_dsdh_batch_rule_is_the_public_codes_loop():
    """``update="batch", quant=0, live_batch=False`` against DeepHash-pytorch's DSDH written out: the bank
    stores ``u.data``, then ``dcc_iter`` rounds of ``W = (B B^T + nu/mu I)^-1 B Y^T`` and the row-wise
    ``B_i = sign(P_i - B'^T W' w_i)`` on B carried over from the last batch, then the likelihood + mu * the
    classifier loss + nu * ||W||^2, all means."""
    k, c, n, mu, nu, eta, rounds = 6, 3, 24, 1.0, 1.0, 55.0, 3
    ours = create_loss("dsdh", k, c, n, dcc_iter=rounds)  # the default is the public code's rule
    bank_u, bank_b, bank_y = torch.zeros(k, n), torch.zeros(k, n), torch.zeros(c, n)
    g = torch.Generator().manual_seed(3)
    for step in range(4):
        ind = torch.randperm(n, generator=g)[:8]
        y = torch.eye(c)[torch.randint(0, c, (8,), generator=g)]
        u = torch.tanh(torch.randn(8, k, generator=g)).requires_grad_(True)
        bank_u[:, ind] = u.detach().T
        bank_y[:, ind] = y.T
        for _ in range(rounds):
            w = torch.inverse(bank_b @ bank_b.T + nu / mu * torch.eye(k)) @ bank_b @ bank_y.T
            for i in range(k):
                p = w @ bank_y + eta / mu * bank_u
                rest = torch.cat((bank_b[:i], bank_b[i + 1 :]))
                w_rest = torch.cat((w[:i], w[i + 1 :]))
                bank_b[i] = (p[i] - rest.T @ w_rest @ w[i]).sign()
        inner = u @ bank_u * 0.5
        s = (y @ bank_y > 0).float()
        likelihood = ((1 + (-inner.abs()).exp()).log() + inner.clamp(min=0) - s * inner).mean()
        expected = likelihood + mu * (y.T - w.T @ bank_b[:, ind]).pow(2).mean() + nu * w.pow(2).mean()
        (expected_grad,) = torch.autograd.grad(expected, u)
        got = ours(u, y, ind)
        (got_grad,) = torch.autograd.grad(got, u)
        assert got.item() == pytest.approx(expected.item(), rel=1e-5), step
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.B.T, bank_b)
        torch.testing.assert_close(ours.W, w, rtol=1e-4, atol=1e-5)
        if step == 0:  # items not yet seen keep code 0 (torch.sign), as there
            unseen = torch.ones(n, dtype=torch.bool)
            unseen[ind] = False
            assert (ours.B[unseen] == 0).all() and (ours.B[~unseen].abs() == 1).all()


def test_dsdh_epoch_rule_couples_the_network_to_the_codes():
    """The coupled rule (DSDH-C's): the epoch update restarts B at sign(U), and ``quant`` (u - b)^2 reaches the
    network."""
    loss = create_loss("dsdh", 4, 2, 6, update="epoch", quant=0.1, live_batch=True)
    assert (
        (loss.update, loss.quant, loss.live_batch)
        == ("epoch", 0.1, True)
        == (
            (c := create_loss("dsdh-c", 4, 2, 6)).update,
            c.quant,
            c.live_batch,
        )
    )
    u0 = torch.tensor([[0.5, -0.2, 0.9, -0.7]] * 6)
    loss.preinstall(u0, torch.eye(2)[torch.arange(6) % 2])
    loss.B.fill_(-1.0)
    loss.epoch_start(1, 2)
    u = u0[:2].clone().requires_grad_(True)
    plain = create_loss("dsdh", 4, 2, 6, update="epoch", quant=0.0, live_batch=True)
    plain.load_state_dict(loss.state_dict())
    (with_quant,) = torch.autograd.grad(loss(u, torch.eye(2)[[0, 1]], torch.arange(2)), u)
    (without,) = torch.autograd.grad(plain(u, torch.eye(2)[[0, 1]], torch.arange(2)), u)
    b = loss.B[:2]
    torch.testing.assert_close(with_quant - without, 0.1 * 2 * (u.detach() - b) / u.numel())
    with pytest.raises(ValueError, match="update must be one of epoch, batch"):
        create_loss("dsdh", 4, 2, 6, update="step")


def test_balanced_wasserstein():
    from robusthash.losses.dsdh import balanced_wasserstein

    perfect = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    assert balanced_wasserstein(perfect).item() == 0.0
    u = torch.tensor([[0.2], [0.9], [-0.4], [0.5]])
    ordered = torch.tensor([-0.4, 0.2, 0.5, 0.9])
    want = ((ordered - torch.tensor([-1.0, -1.0, 1.0, 1.0])) ** 2).mean()
    assert balanced_wasserstein(u).item() == pytest.approx(want.item())
    odd = torch.tensor([[0.1], [0.3], [-0.2]])
    assert balanced_wasserstein(odd).item() == pytest.approx(((-0.2 + 1) ** 2 + 0.1**2 + (0.3 - 1) ** 2) / 3)


@pytest.mark.parametrize("name", ["dph", "dpsh", "hashnet", "dsdh"])
def test_a_constant_bank_gives_deephash_pytorchs_gradient(name):
    """``live_batch=False`` is the authors' rule (``U[ind] = u.data``): the gradient equals that of the same
    loss with the bank a constant (written out here by detaching a copy); the default keeps the batch rows live,
    and on an empty bank DPH's gradient is then exactly twice the authors' (the pair terms count both sides)."""
    g = torch.Generator().manual_seed(0)
    n, bits, classes = 40, 12, 4
    labels = torch.nn.functional.one_hot(torch.randint(0, classes, (n,), generator=g), classes).float()
    bank = torch.tanh(torch.randn(n, bits, generator=g))
    u = torch.tanh(torch.randn(8, bits, generator=g))
    idx = torch.arange(3, 11)

    def grad(live: bool, empty: bool = False, constant: bool = False) -> torch.Tensor:
        loss = create_loss(name, bits, classes, n, live_batch=live)
        if not empty:
            loss.preinstall(bank, labels)
        x = u.clone().requires_grad_(True)
        if constant:  # the reference: the bank as stored (u.data in the batch rows), no gradient through it
            store = loss.update_bank
            loss.update_bank = lambda v, y, i: store(v, y, i).detach()
        (out,) = torch.autograd.grad(loss(x, labels[idx], idx), x)
        return out

    assert torch.allclose(grad(live=False), grad(live=True, constant=True), atol=1e-7)
    assert not torch.allclose(grad(live=True), grad(live=False), atol=1e-4)
    if name == "dph":
        assert torch.allclose(grad(live=True, empty=True), 2 * grad(live=False, empty=True), atol=1e-7)
