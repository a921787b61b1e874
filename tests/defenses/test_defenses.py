"""Adversarial training: the code bank, each method's step, robustness gained, exact resume."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import torch.multiprocessing as mp

from robusthash import training
from robusthash.attacks import CodeBank, create_attack
from robusthash.checkpoint import read_checkpoint
from robusthash.codes import binarize, pharos_code
from robusthash.defenses import DefenseConfig, TrainingCodeBank, defend, defense_class, list_defenses
from robusthash.errors import UserError
from robusthash.evaluation import encode
from robusthash.models.prototype import PrototypeNet, prototype_loss
from robusthash.robustness import AttackSuite, evaluate_attacks
from robusthash.training import TrainConfig, train
from tests.test_training import toy_data


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory):
    data = toy_data(n_per_class=40)
    path = tmp_path_factory.mktemp("defend") / "base.pt"
    train(data, TrainConfig(bits=16, loss="dph", epochs=4, batch_size=16, lr=3e-3, seed=1), path, quiet=True)
    return data, read_checkpoint(path)


def _config(method, **kw):
    return DefenseConfig(
        **{"method": method, "epochs": 2, "batch_size": 16, "eps": 32 / 255, "step_size": 8 / 255, **kw}
    )


def test_code_bank_starts_from_eval_codes_and_updates_rows(toy_ckpt):
    data, ckpt = toy_ckpt
    model = ckpt.build_model().train()  # from_model must use eval mode and restore train mode
    bank = TrainingCodeBank.from_model(model, data.train, "cpu")
    assert model.training
    model.eval()
    assert torch.equal(bank.codes, encode(model, data.train))
    view = bank.view()
    new = torch.full((2, 16), -0.5)
    bank.update(torch.tensor([3, 7]), new)
    assert torch.equal(bank.values[[3, 7]], new) and torch.equal(view.codes[[3, 7]], -torch.ones(2, 16))
    state = bank.state_dict()
    bank.update(torch.tensor([3]), torch.full((1, 16), 0.5))
    bank.load_state_dict(state)
    assert torch.equal(view.codes[3], -torch.ones(16))  # restored in place: old views stay valid


def _gather_worker(rank: int, world: int, store_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    bank = TrainingCodeBank(torch.zeros(6, 2), torch.zeros(6, 1))
    rows = torch.tensor([rank, rank + 2] if rank == 0 else [rank + 2])  # ranks update different rows
    bank.update(rows, torch.full((len(rows), 2), float(rank + 1)))
    torch.save(bank.values, f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_code_bank_updates_are_all_gathered_across_processes(tmp_path):
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "bank")), nprocs=2)
    banks = [torch.load(tmp_path / f"bank.{r}", weights_only=True) for r in range(2)]
    assert torch.equal(banks[0], banks[1])
    assert banks[0][:, 0].tolist() == [1.0, 0.0, 1.0, 2.0, 0.0, 0.0]


def _trainer(method, model, loss_fn, data, config):
    return defense_class(method)(
        model, loss_fn, data, torch.device("cpu"), torch.Generator().manual_seed(0), config=config
    )


def _spy_on_attack(trainer, monkeypatch):
    """Replace the trainer's attack by one that runs it and keeps its output in the returned dict ("x_adv")."""
    seen = {}
    real_attack = trainer.attack

    class SpyAttack:
        def reseed(self, seed):
            real_attack.reseed(seed)
            return self

        def __getattr__(self, name):
            return getattr(real_attack, name)

        def __call__(self, images, labels, targets=None, indices=None, start=None):
            seen["start"] = start
            seen["x_adv"] = real_attack(images, labels, targets, indices=indices, start=start)
            return seen["x_adv"]

    monkeypatch.setattr(trainer, "attack", SpyAttack())
    return seen


@pytest.mark.parametrize("method", list_defenses())
def test_one_step_of_each_method(method, toy_ckpt):
    data, ckpt = toy_ckpt
    torch.manual_seed(0)
    model = ckpt.build_model().train()
    from robusthash.losses import create_loss

    loss_fn = create_loss("dph", 16, data.num_classes, len(data.train))
    trainer = _trainer(method, model, loss_fn, data, _config(method))
    x, y, idx = data.train.batch(torch.arange(16))
    before = [p.clone() for p in model.parameters()]
    terms = trainer.batch_loss(x, y, idx, step=0)
    optimizer = trainer.make_optimizer()
    terms["loss"].backward()
    optimizer.step()
    assert set(terms) >= {"loss", "ori"} and all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model.eval()
    # the bank's rows for the batch now hold this step's clean codes (before the update), others untouched
    assert (trainer.bank.codes[16:] == encode(ckpt.build_model(), data.train)[16:]).all()


def test_cgat_loss_is_eq_11_with_center_codes_from_the_updated_bank(toy_ckpt, monkeypatch):
    data, ckpt = toy_ckpt
    model = ckpt.build_model().train()
    from robusthash.losses import create_loss

    loss_fn = create_loss("dph", 16, data.num_classes, len(data.train))
    cfg = _config("cgat", method_options={"lam": 0.7})
    trainer = _trainer("cgat", model, loss_fn, data, cfg)
    x, y, idx = data.train.batch(torch.arange(8))
    seen = _spy_on_attack(trainer, monkeypatch)
    terms = trainer.batch_loss(x, y, idx, step=0)
    assert (seen["x_adv"] - x).abs().max() <= cfg.eps + 1e-6
    centers = pharos_code(y, trainer.bank.codes, trainer.bank.labels, "cgat", "binary")
    with torch.no_grad():
        adv_out = model(seen["x_adv"])
    want_adv = -(centers * adv_out).sum(1).mean() / 16
    assert terms["adv"].item() == pytest.approx(want_adv.item(), rel=1e-4)
    assert terms["loss"].item() == pytest.approx((terms["ori"] + 0.7 * terms["adv"]).item(), rel=1e-5)


def test_prototype_net_and_its_loss():
    net = PrototypeNet(5, 12)
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [4096, 512, 12]
    torch.manual_seed(0)
    p = torch.tanh(torch.randn(3, 12))
    targets = torch.eye(5)[[0, 1, 2]]
    codes = binarize(torch.randn(10, 12))
    labels = torch.eye(5)[torch.arange(10) % 5]
    sim = p @ codes.T / 12
    pos = (targets @ labels.T) > 0
    sp, sn = sim[pos], sim[~pos]
    want = (
        torch.logsumexp((sn + 2).clamp_min(0) * sn, 0) + torch.logsumexp(-(2 - sp).clamp_min(0) * sp, 0)
    ) / 3
    want = want + ((p.sign() - p) ** 2).sum() / (1e4 * 3)
    assert prototype_loss(p, targets, codes, labels).item() == pytest.approx(want.item(), rel=1e-6)


def _pga_robust_map(model, data):
    suite = AttackSuite(attacks=["pga"], protocol="pgd20", eps=32 / 255, topk=None)
    return evaluate_attacks(model, data, suite, quiet=True).robust_map


@pytest.mark.parametrize("method", ["cgat", "atrdh"])
def test_defending_makes_the_model_more_robust(method, toy_ckpt):
    data, ckpt = toy_ckpt
    before = _pga_robust_map(ckpt.build_model(), data)
    lr = {"cgat": 0.01, "atrdh": 1e-3}[method]
    result = defend(ckpt, data, _config(method, epochs=3, lr=lr), quiet=True)
    # measured on this toy: CgAT +0.095 to +0.098 over seeds 0-2 (fresh random starts every step), ATRDH more
    assert _pga_robust_map(result.model, data) > before + 0.08


def test_defend_resumes_exactly_and_records_its_settings(toy_ckpt, tmp_path, monkeypatch):
    data, ckpt = toy_ckpt
    full = defend(ckpt, data, _config("cgat"), tmp_path / "full.pt", quiet=True)
    real_save = training.save_checkpoint
    calls = {"n": 0}

    def crash(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        defend(ckpt, data, _config("cgat"), tmp_path / "resumed.pt", quiet=True)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    resumed = defend(ckpt, data, _config("cgat"), tmp_path / "resumed.pt", quiet=True)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    meta = read_checkpoint(tmp_path / "resumed.pt").meta
    assert meta["kind"] == "defended" and meta["defense"]["method"] == "cgat"
    assert meta["defense"]["config"]["method_options"] == {} and meta["model"]["bits"] == 16
    with pytest.raises(UserError, match=r"other settings \(defense.method_options.lam\)"):
        defend(ckpt, data, _config("cgat", method_options={"lam": 0.5}), tmp_path / "resumed.pt", quiet=True)
    other_base = ckpt.build_model()
    with torch.no_grad():
        next(other_base.parameters()).add_(0.01)
    with pytest.raises(UserError, match=r"other settings \(base\)"):  # same path, other weights: refused
        defend(ckpt, data, _config("cgat"), tmp_path / "resumed.pt", quiet=True, model=other_base)
    # a checkpoint from before a DefenseConfig field existed reads it at its default and is reused as it is
    payload = torch.load(tmp_path / "full.pt", weights_only=True)
    del payload["meta"]["defense"]["config"]["precision"]
    # and one from before each defence had its own options (lam and similarity were DefenseConfig fields)
    del payload["meta"]["defense"]["config"]["method_options"]
    payload["meta"]["defense"]["config"] |= {"lam": 1.0, "similarity": None}
    torch.save(payload, tmp_path / "full.pt")
    again = defend(ckpt, data, _config("cgat"), tmp_path / "full.pt", quiet=True)
    for a, b in zip(full.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    payload["meta"]["defense"]["config"]["field_from_the_future"] = 1
    torch.save(payload, tmp_path / "full.pt")
    with pytest.raises(UserError, match="other settings"):
        defend(ckpt, data, _config("cgat"), tmp_path / "full.pt", quiet=True)


def test_unknown_method_and_bad_config():
    with pytest.raises(
        UserError, match="unknown defence 'madry'; valid: atrdh, cgat, gaussian, pga-at, saat"
    ):
        defense_class("madry")
    with pytest.raises(UserError, match="lambda"):
        DefenseConfig(method_options={"lam": -1}).validate()


def test_attacks_see_the_bank_as_it_changes(toy_ckpt):
    data, ckpt = toy_ckpt
    model = ckpt.build_model()
    bank = TrainingCodeBank.from_model(model, data.train, "cpu")
    attack = create_attack("pga", model, reference=bank.view(), weighting="cgat")
    y = data.train.labels[:4]
    first = attack.pharos(y).clone()
    bank.update(torch.arange(len(data.train)), -bank.values)
    assert (attack.pharos(y) == -first).float().mean() > 0.9  # (zero sums keep sign(0) = +1)
    assert isinstance(bank.view(), CodeBank)


def test_each_defence_validates_its_own_options():
    """ATRDH has no options of its own: lambda or a similarity given to it is refused, not ignored; CgAT's are
    typed and checked by CgAT."""
    DefenseConfig(method="atrdh").validate()
    DefenseConfig(method="cgat", method_options={"lam": 2, "similarity": "dice"}).validate()
    for bad in ({"lam": 2.0}, {"similarity": "dice"}):
        with pytest.raises(UserError, match=f"defence atrdh takes no method options, got {next(iter(bad))}"):
            DefenseConfig(method="atrdh", method_options=bad).validate()
    for bad, named in (
        ({"lamda": 2.0}, "unknown setting.*lamda; valid: lam, similarity"),
        ({"lam": "2"}, "method_options lam: expected a number"),
        ({"similarity": "euclid"}, "unknown similarity 'euclid'"),
    ):
        with pytest.raises(UserError, match=named):
            DefenseConfig(method="pga-at", method_options=bad).validate()


def test_records_of_earlier_versions_read_their_options_back():
    """lam and similarity were DefenseConfig fields: a stored config keeps matching today's equal config."""
    from robusthash.config import restore

    today = restore("defense", asdict(DefenseConfig(method="cgat", method_options={"lam": 0.5})))
    assert restore("defense", {"method": "cgat", "lam": 0.5, "similarity": None}) == today
    assert restore("defense", {"method": "cgat", "lam": 1.0, "similarity": None}) != today
    assert restore("defense", {"method": "atrdh", "lam": 1.0, "similarity": None}) == restore(
        "defense", asdict(DefenseConfig(method="atrdh"))
    )
    assert restore("defense", {"method": "cgat", "field_from_the_future": 1}) is None


def test_gaussian_training_trains_on_noisy_copies_drawn_from_the_step(toy_ckpt):
    """Cohen et al.'s baseline: the loss of x + N(0, sigma^2); the noise of a step is the same on a rerun (resume),
    another step's differs, and a vanishing sigma gives the clean loss."""
    from robusthash.losses import create_loss

    data, ckpt = toy_ckpt
    x, y, idx = data.train.batch(torch.arange(16))

    def loss_at(sigma, step):
        """(the step's loss, the clean loss of the same batch from an identical loss state)."""
        import copy

        model = ckpt.build_model()
        loss_fn = create_loss("dph", 16, data.num_classes, len(data.train))
        trainer = _trainer(
            "gaussian", model, loss_fn, data, _config("gaussian", method_options={"sigma": sigma})
        )
        twin = copy.deepcopy(trainer.loss_fn)
        noisy = trainer.batch_loss(x, y, idx, step)["loss"].item()
        with torch.no_grad():
            clean = float(twin(torch.tanh(model.preactivation(x)), y, idx))
        return noisy, clean

    tiny, clean = loss_at(1e-9, 0)
    assert tiny == pytest.approx(clean, rel=1e-5)
    assert loss_at(0.3, 4)[0] == loss_at(0.3, 4)[0] != loss_at(0.3, 5)[0]
    with pytest.raises(UserError, match="sigma must be > 0"):
        DefenseConfig(method="gaussian", method_options={"sigma": 0.0}).validate()


def test_free_training_moves_delta_by_the_sign_of_the_center_loss_gradient(toy_ckpt, monkeypatch):
    """Shafahi et al.'s Algorithm 1 written out for CgAT: x' = clamp(x + delta); after the step's backward,
    delta <- clip(delta + eps sign(grad_delta of lambda L_adv), -eps, eps); no inner attack runs."""
    data, ckpt = toy_ckpt
    model = ckpt.build_model().train()
    from robusthash.losses import create_loss

    loss_fn = create_loss("dph", 16, data.num_classes, len(data.train))
    cfg = _config("cgat", replays=3, method_options={"lam": 0.5})
    trainer = _trainer("cgat", model, loss_fn, data, cfg)
    monkeypatch.setattr(trainer, "attack", None)  # calling it would fail: free training runs no attack
    x, y, idx = data.train.batch(torch.arange(16))
    delta = torch.zeros_like(x)
    for _ in range(3):
        terms = trainer.batch_loss(x, y, idx, step=0)
        terms["loss"].backward()
        trainer.after_backward()
        probe = delta.clone().requires_grad_(True)
        centers = pharos_code(y, trainer.bank.codes, trainer.bank.labels, "cgat", "binary")
        outputs = torch.tanh(model.preactivation((x + probe).clamp(0, 1)))
        (grad,) = torch.autograd.grad(-(centers * outputs).sum(1).mean() / 16, probe)
        delta = (delta + cfg.eps * grad.sign()).clamp(-cfg.eps, cfg.eps)
        torch.testing.assert_close(trainer.delta, delta, rtol=0, atol=1e-7)
        model.zero_grad()
    assert trainer.delta.abs().max() == pytest.approx(cfg.eps) and trainer.delta.requires_grad is False


@pytest.mark.parametrize("fast", [{"replays": 2}, {"carry": True}])
def test_free_and_carried_training_resume_exactly(fast, toy_ckpt, tmp_path, monkeypatch):
    data, ckpt = toy_ckpt
    cfg = _config("cgat", epochs=2, **fast)
    full = defend(ckpt, data, cfg, tmp_path / "full.pt", quiet=True)
    state = read_checkpoint(tmp_path / "full.pt").state
    batches = -(-len(data.train) // 16)
    if cfg.replays > 1:
        assert state["scheduler"]["last_epoch"] == 2 * 2 * batches  # an optimiser step per replay
        assert state["method"]["delta"].abs().max() <= cfg.eps + 1e-7
    else:
        assert (
            bool(state["method"]["seen"].all()) and state["method"]["carried"].abs().max() <= cfg.eps + 1e-6
        )
    real_save = training.save_checkpoint
    calls = {"n": 0}

    def crash(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        defend(ckpt, data, cfg, tmp_path / "resumed.pt", quiet=True)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    resumed = defend(ckpt, data, cfg, tmp_path / "resumed.pt", quiet=True)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["cgat", "atrdh"])
def test_carry_starts_each_items_attack_where_its_last_one_ended(method, toy_ckpt, monkeypatch):
    """ATTA (Zheng et al. 2020) written out: an item's first attack starts at the attack's own random start, each
    later one at clamp(x + delta) with delta the perturbation its previous attack ended at."""
    data, ckpt = toy_ckpt
    model = ckpt.build_model().train()
    from robusthash.losses import create_loss

    loss_fn = create_loss("dph", 16, data.num_classes, len(data.train))
    trainer = _trainer(method, model, loss_fn, data, _config(method, carry=True, steps=1))
    seen = _spy_on_attack(trainer, monkeypatch)
    x, y, idx = data.train.batch(torch.arange(8))
    trainer.batch_loss(x, y, idx, step=0)
    trainer.attack.reseed(trainer.attack_seed(0))
    torch.testing.assert_close(seen["start"], trainer.attack.random_start(x, idx), rtol=0, atol=0)
    first = seen["x_adv"]
    mixed = torch.arange(4, 12)  # items 4-7 seen, 8-11 new
    x2, y2, idx2 = data.train.batch(mixed)
    trainer.batch_loss(x2, y2, idx2, step=1)
    torch.testing.assert_close(seen["start"][:4], first[4:], rtol=0, atol=1e-6)
    trainer.attack.reseed(trainer.attack_seed(1))
    torch.testing.assert_close(
        seen["start"][4:], trainer.attack.random_start(x2[4:], idx2[4:]), rtol=0, atol=0
    )
    torch.testing.assert_close(trainer.carried[idx2], seen["x_adv"] - x2, rtol=0, atol=0)


def test_a_given_start_replaces_the_random_start_and_is_projected(toy_ckpt):
    data, ckpt = toy_ckpt
    model = ckpt.build_model()
    attack = create_attack(
        "pga", model, reference=CodeBank(encode(model, data.train), data.train.labels), steps=0, eps=4 / 255
    )
    x, y, _ = data.train.batch(torch.arange(6))
    start = (x + torch.linspace(-0.1, 0.1, 6).view(-1, 1, 1, 1)).clamp(0, 1)
    got = attack(x, y, start=start)
    torch.testing.assert_close(got, torch.minimum(torch.maximum(start, x - 4 / 255), x + 4 / 255).clamp(0, 1))
    with pytest.raises(ValueError, match="start must have the images' shape"):
        attack(x, y, start=start[:2])


def test_free_training_needs_a_defence_whose_loss_is_its_attacks_objective():
    with pytest.raises(UserError, match="carry and replays > 1 do not mix"):
        DefenseConfig(carry=True, replays=2).validate()
    with pytest.raises(UserError, match="defence atrdh cannot train free .*valid: cgat, pga-at, saat"):
        DefenseConfig(method="atrdh", replays=2).validate()
    with pytest.raises(UserError, match="replays must be >= 1"):
        DefenseConfig(replays=0).validate()


def test_saat_loss_is_the_public_codes_with_its_mainstay_codes(toy_ckpt, monkeypatch):
    """SAAT's ``adv_training.py`` written out: the mainstay code of ``generate_mainstay_code`` (cosine label
    weights over positives, normalised; 1 - sign(w) over negatives, normalised) from the bank after this step's
    codes entered it, and ``L_ori - lambda mean(adv o b_m) + mu mean((adv - sign adv)^2)``."""
    data, ckpt = toy_ckpt
    model = ckpt.build_model().train()
    from robusthash.losses import create_loss

    loss_fn = create_loss("dph", 16, data.num_classes, len(data.train))
    trainer = _trainer("saat", model, loss_fn, data, _config("saat", method_options={"lam": 0.7, "mu": 0.3}))
    assert trainer.similarity == "cosine" and trainer.attack.masked is False
    optimizer = trainer.make_optimizer()
    group = optimizer.param_groups[0]
    assert (type(optimizer).__name__, group["lr"], group["momentum"], group["weight_decay"]) == (
        "SGD",
        0.05,
        0,
        1e-5,
    )
    x, y, idx = data.train.batch(torch.arange(8))
    seen = _spy_on_attack(trainer, monkeypatch)
    terms = trainer.batch_loss(x, y, idx, step=0)
    label, train_code, train_label = y.float(), trainer.bank.codes.float(), trainer.bank.labels.float()
    w_1 = label @ train_label.T
    w_1 = w_1 / (label.norm(dim=1, keepdim=True) * train_label.norm(dim=1, keepdim=True).T + 1e-8)
    w_2 = 1 - w_1.sign()
    w_1 = w_1 / w_1.sum(1, keepdim=True)
    w_2 = w_2 / w_2.sum(1, keepdim=True)
    mainstay = torch.sign(w_1 @ train_code - w_2 @ train_code)
    with torch.no_grad():
        adv = model(seen["x_adv"])
    assert terms["adv"].item() == pytest.approx(-torch.mean(adv * mainstay).item(), rel=1e-4)
    assert terms["qua"].item() == pytest.approx(0.3 * torch.mean((adv - adv.sign()) ** 2).item(), rel=1e-4)
    want = terms["ori"] + 0.7 * terms["adv"] + terms["qua"]
    assert terms["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(UserError, match="mu must be >= 0"):
        DefenseConfig(method="saat", method_options={"mu": -1}).validate()


@pytest.mark.parametrize("method", [m for m in list_defenses() if defense_class(m).free])
def test_each_free_defence_trains_one_replayed_epoch(method, toy_ckpt, monkeypatch):
    data, ckpt = toy_ckpt
    calls = {"n": 0}
    from robusthash.losses import create_loss

    loss_fn = create_loss("dph", 16, data.num_classes, len(data.train))
    attack_class = type(_trainer(method, ckpt.build_model(), loss_fn, data, _config(method)).attack)

    def count(self, *args, **kwargs):
        calls["n"] += 1
        raise AssertionError("free training ran its attack")

    monkeypatch.setattr(attack_class, "__call__", count)
    result = defend(ckpt, data, _config(method, replays=2, epochs=1), quiet=True)
    assert calls["n"] == 0 and len(result.history) == 1 and math.isfinite(result.history[0]["adv"])
