"""Center smoothing's certificate and the AP lower bound: against brute force, the authors' formulas written out,
and attacks that must never go below a certified bound."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from robusthash import metrics
from robusthash.certify import (
    CertifySettings,
    SmoothingConfig,
    ap_of_distances,
    certified_ap,
    certify_model,
    certify_queries,
)
from robusthash.codes import hamming_distance
from robusthash.errors import UserError


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_the_radius_quantile_and_the_center_slack_are_the_authors_formulas():
    cfg = SmoothingConfig(sigma=0.25, n_pred=2000, n_cert=4000, alpha_1=0.005, alpha_2=0.005, delta=0.05)
    ppf_055 = 0.12566134685507402  # Phi^-1(0.55)
    for radius in (0.0, 0.1, 0.3):
        expected = _phi(ppf_055 + radius / 0.25) + math.sqrt(math.log(1 / 0.005) / (2 * 4000))
        assert cfg.quantile(radius) == pytest.approx(expected, abs=1e-9)
    assert cfg.delta_1 == pytest.approx(math.sqrt(math.log(2 / 0.005) / 4000))
    with pytest.raises(UserError, match="use n_pred >= 1199"):
        SmoothingConfig(n_pred=1000).validate()
    with pytest.raises(UserError, match="sigma must be > 0"):
        SmoothingConfig(sigma=0).validate()


def test_ap_of_a_ranking_is_the_evaluations_ap_over_the_whole_database():
    g = torch.Generator().manual_seed(0)
    q = torch.where(torch.rand(5, 8, generator=g) > 0.5, 1.0, -1.0)
    db = torch.where(torch.rand(60, 8, generator=g) > 0.5, 1.0, -1.0)  # many ties at 8 bits
    ql = torch.nn.functional.one_hot(torch.randint(0, 3, (5,), generator=g), 3).float()
    dl = torch.nn.functional.one_hot(torch.randint(0, 3, (60,), generator=g), 3).float()
    reference = metrics.average_precision(q, db, ql, dl, None)
    for i in range(5):
        relevant = ((ql[i] @ dl.T) > 0).numpy()
        d = hamming_distance(q[i : i + 1], db)[0].numpy()
        assert ap_of_distances(d, relevant) == pytest.approx(float(reference[i]), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_the_bound_never_exceeds_the_worst_code_in_the_ball_enumerated(seed):
    """Every code within Hamming r of the center (all 2^8 codes enumerated): none has a lower AP than the bound;
    at r = 0 the bound is the center's own AP."""
    g = torch.Generator().manual_seed(seed)
    bits = 8
    db = torch.where(torch.rand(50, bits, generator=g) > 0.5, 1.0, -1.0)
    relevant = (torch.rand(50, generator=g) < 0.3).numpy()
    relevant[0] = True
    center = torch.where(torch.rand(bits, generator=g) > 0.5, 1.0, -1.0)
    codes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=bits)))
    distance_to_center = hamming_distance(codes, center.unsqueeze(0))[:, 0]
    aps = np.array(
        [ap_of_distances(hamming_distance(c.unsqueeze(0), db)[0].numpy(), relevant) for c in codes]
    )
    for r in range(bits + 1):
        worst = aps[(distance_to_center <= r).numpy()].min()
        bound = certified_ap(center, r, db, relevant)
        assert bound <= worst + 1e-12
        if r == 0:
            assert bound == pytest.approx(worst)
    assert certified_ap(center, bits, db, relevant) <= aps.min() + 1e-12


def test_a_querys_certificate_does_not_depend_on_the_other_queries(toy):
    data, model = toy
    cfg = SmoothingConfig(sigma=0.1, radii=[0.0, 0.1], n_center=10, n_pred=1300, n_cert=500, batch_size=50)
    x, y, _ = data.query.batch(torch.tensor([3, 7]))
    db, dbl = model.encode(data.database.batch(torch.arange(len(data.database)))[0]), data.database.labels
    both = certify_queries(model, x, torch.tensor([3, 7]), y, db, dbl, cfg)
    alone = certify_queries(model, x[1:], torch.tensor([7]), y[1:], db, dbl, cfg)
    assert both.certificates[1].hamming == alone.certificates[0].hamming
    assert torch.equal(both.certificates[1].center, alone.certificates[0].center)
    assert [b[1] for b in both.certified_ap] == [a[0] for a in alone.certified_ap]


@pytest.mark.slow
def test_no_attack_goes_below_a_certified_bound(toy):
    """Soundness: on every certified query and radius, the smoothed model's AP on the images of PgA and of the
    robust cascade in L2 (two seeds) stays at or above the certified lower bound."""
    data, model = toy
    for seed in (0, 1):
        cfg = SmoothingConfig(
            sigma=0.12, radii=[0.0, 0.1, 0.2], n_center=10, n_pred=1300, n_cert=800, batch_size=100, seed=seed
        )
        parts = certify_model(model, data, cfg, CertifySettings(queries=6, steps=20), quiet=True)
        lowest = np.min(
            np.stack([parts["smoothed_ap"]] + [v[k] for v in parts["empirical_ap"].values() for k in (1, 2)]),
            axis=0,
        )
        for k in range(3):
            bound = np.asarray(parts["certified_ap"][k])
            assert (bound <= np.asarray(parts["smoothed_ap"]) + 1e-12).all()
            if k:
                found = np.minimum(*[np.asarray(v[k]) for v in parts["empirical_ap"].values()])
                assert (bound <= found + 1e-12).all()
        assert np.isfinite(lowest).all() and len(parts["query_indices"]) == 6
        certified = [r for row in parts["hamming"] for r in row if r is not None]
        assert certified, "nothing was certified: the test would prove nothing"


def test_certify_from_the_command_line_and_in_the_report(tmp_path, monkeypatch):
    from robusthash.app.cli import main
    from robusthash.app.report.build import build_report
    from robusthash.results import CertifyRun, load_results

    monkeypatch.chdir(tmp_path)
    argv = [
        "certify",
        "--model",
        "fashion-mnist-dph-32",
        "--queries",
        "2",
        "--n-center",
        "5",
        "--n-pred",
        "1200",
        "--n-cert",
        "300",
        "--steps",
        "3",
        "--attacks",
        "pga",
        "--radius",
        "0,0.1",
        "--quiet",
        "--out",
        "c",
    ]
    assert main(argv) == 0
    run = load_results(tmp_path / "c" / "certify_results.json")
    assert isinstance(run, CertifyRun) and run.radii == [0.0, 0.1] and len(run.query_indices) == 2
    assert all(c <= e + 1e-12 for c, e in zip(run.certified_map, run.empirical_map, strict=True))
    page = build_report([tmp_path / "c" / "certify_results.json"], tmp_path / "rep").read_text()
    assert "Certified: undefended model" in page and "certified mAP (lower bound)" in page
    assert page.count("data:image/png;base64,") == 1
    assert main(["certify", "--model", "fashion-mnist-dph-32", "--n-pred", "100", "--quiet"]) == 2


def test_an_experiment_file_certifies_every_model(tmp_path):
    from robusthash.app import zoo
    from robusthash.app.experiment import load_experiment, run_experiment
    from robusthash.results import CertifyRun, load_results

    path = tmp_path / "exp.toml"
    path.write_text(
        f'[model]\ncheckpoint = "{zoo.get("fashion-mnist-dph-32").path}"\n'
        '[attack]\nattacks = ["pga"]\nqueries = 2\nsteps = 2\n'
        "[certify]\nsigma = 0.2\nradii = [0.0, 0.1]\nqueries = 2\nn_center = 5\nn_pred = 1200\nn_cert = 300\n"
        'attacks = ["pga"]\nsteps = 2\n'
    )
    assert load_experiment(path).resolved()["certify"]["n_pred"] == 1200
    result = run_experiment(path, tmp_path / "out", quiet=True, device_name="cpu")
    assert result.certified == ["certify-none.json"]
    run = load_results(tmp_path / "out" / "certify-none.json")
    assert isinstance(run, CertifyRun) and run.sigma == 0.2 and len(run.query_indices) == 2
    assert "Certified: undefended model" in (tmp_path / "out" / "report" / "index.html").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text("[certify]\nsigma = 0.2\nn_pred = 10\n")
    with pytest.raises(UserError, match=r"\[certify\]: n_pred 10 cannot pass the center check"):
        load_experiment(bad)
    bad.write_text('[certify]\nsigma = "wide"\n')
    with pytest.raises(UserError, match=r"\[certify\] sigma: expected a number"):
        load_experiment(bad)
