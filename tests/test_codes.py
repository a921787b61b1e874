"""The pharos / center code is optimal: brute force over all 2^K codes (PgA appendix A.1, CgAT sec. 3.4)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from robusthash.codes import binarize, hamming_distance, label_similarity, pharos_code


def _all_codes(bits: int) -> np.ndarray:
    return np.array(list(itertools.product([-1, 1], repeat=bits)), dtype=np.float64)


def _dice(a, b):
    s = a.sum() + b.sum()
    return 0.0 if s == 0 else 2 * (a * b).sum() / s


def _jaccard(a, b):
    u = ((a + b) > 0).sum()
    return 0.0 if u == 0 else (a * b).sum() / u


def _cosine(a, b):
    n = np.sqrt(a.sum() * b.sum())
    return 0.0 if n == 0 else (a * b).sum() / n


SIMS = {
    "binary": lambda a, b: float((a * b).sum() > 0),
    "dice": _dice,
    "jaccard": _jaccard,
    "cosine": _cosine,
}


def _psi(b, y, bank, bank_labels, weighting, similarity):
    """psi(b) written from the papers' definitions, with explicit loops over positives and negatives."""
    hd = lambda u, v: 0.5 * (len(u) - u @ v)  # noqa: E731
    pos = [i for i in range(len(bank)) if (y * bank_labels[i]).sum() > 0]
    neg = [j for j in range(len(bank)) if j not in pos]
    z = [SIMS[similarity](y, bank_labels[i]) for i in range(len(bank))]
    w = {i: z[i] for i in pos} | {j: 1 - z[j] for j in neg}
    if weighting == "pga":
        if pos and neg:  # the double sum of eq. (7)
            return sum(w[i] * hd(b, bank[i]) - w[j] * hd(b, bank[j]) for i in pos for j in neg)
    elif weighting == "saat":  # SAAT: positives' similarities normalised to sum 1, negatives uniform
        z_sum = sum(w[i] for i in pos)
        return sum(w[i] / z_sum * hd(b, bank[i]) for i in pos if z_sum > 0) - sum(
            hd(b, bank[j]) / len(neg) for j in neg
        )
    else:  # eq. (3) with the weights of eq. (5)
        n = len(bank)
        return sum(n / len(pos) * w[i] * hd(b, bank[i]) for i in pos) - sum(
            n / len(neg) * w[j] * hd(b, bank[j]) for j in neg
        )
    # documented rule for an empty side: the other side alone
    return sum(w[i] * hd(b, bank[i]) for i in pos) - sum(w[j] * hd(b, bank[j]) for j in neg)


@pytest.mark.parametrize("weighting", ["pga", "cgat", "saat"])
@pytest.mark.parametrize("similarity", ["binary", "dice", "jaccard", "cosine"])
@pytest.mark.parametrize("seed", range(4))
def test_pharos_code_minimises_psi_over_all_codes(weighting, similarity, seed):
    rng = np.random.default_rng(seed)
    bits = int(rng.integers(2, 9))
    n, classes = int(rng.integers(5, 25)), 4
    bank = rng.choice([-1.0, 1.0], (n, bits))
    bank_labels = (rng.random((n, classes)) < 0.35).astype(np.float64)
    labels = (rng.random((6, classes)) < 0.35).astype(np.float64)
    labels[0] = 0  # an all-zero label row: no positives
    labels[1] = 1  # shares a label with nearly everything
    got = pharos_code(
        torch.tensor(labels), torch.tensor(bank), torch.tensor(bank_labels), weighting, similarity
    )
    assert set(torch.unique(got).tolist()) <= {-1.0, 1.0}
    codes = _all_codes(bits)
    for q in range(len(labels)):
        best = min(_psi(c, labels[q], bank, bank_labels, weighting, similarity) for c in codes)
        mine = _psi(got[q].numpy(), labels[q], bank, bank_labels, weighting, similarity)
        assert mine <= best + 1e-9, (q, mine, best)


def test_no_negatives_and_no_positives_follow_the_documented_rule():
    bank = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    bank_labels = torch.ones(3, 1)
    for weighting in ("pga", "cgat", "saat"):
        # every bank item positive: the weighted majority of the positives
        assert pharos_code(torch.ones(1, 1), bank, bank_labels, weighting).tolist() == [[1.0, 1.0, -1.0]]
        # no positives (all-zero label row): away from the negatives
        assert pharos_code(torch.zeros(1, 1), bank, bank_labels, weighting).tolist() == [[-1.0, -1.0, 1.0]]


def test_pga_and_cgat_agree_under_binary_similarity():
    rng = np.random.default_rng(0)
    bank = torch.tensor(rng.choice([-1.0, 1.0], (200, 16)))
    bank_labels = torch.tensor((rng.random((200, 5)) < 0.3).astype(float))
    labels = torch.tensor((rng.random((30, 5)) < 0.3).astype(float))
    a = pharos_code(labels, bank, bank_labels, "pga", "binary")
    b = pharos_code(labels, bank, bank_labels, "cgat", "binary")
    c = pharos_code(labels, bank, bank_labels, "saat", "binary")
    assert torch.equal(a, b) and torch.equal(a, c)


def test_saat_mainstay_equals_the_pharos_code_on_single_label_data():
    rng = np.random.default_rng(1)
    bank = torch.tensor(rng.choice([-1.0, 1.0], (300, 32)))
    bank_labels = torch.eye(10, dtype=torch.float64)[torch.tensor(rng.integers(0, 10, 300))]
    labels = torch.eye(10, dtype=torch.float64)[torch.tensor(rng.integers(0, 10, 40))]
    assert torch.equal(
        pharos_code(labels, bank, bank_labels, "saat"), pharos_code(labels, bank, bank_labels, "pga")
    )


def test_dice_weights_change_the_code_for_multilabel_queries():
    # Positive 0 shares 1 of its 2 labels with the query (dice 2/3), positive 1 matches exactly (dice 1);
    # the two negatives cancel. Binary weights tie (sign(0) = +1); Dice weights favour the exact match.
    bank = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    bank_labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    assert pharos_code(y, bank, bank_labels, "cgat").tolist() == [[1.0, 1.0]]
    assert pharos_code(y, bank, bank_labels, "pga").tolist() == [[-1.0, -1.0]]


def test_sign_rule_and_hamming():
    assert binarize(torch.tensor([-0.5, 0.0, 0.3])).tolist() == [-1.0, 1.0, 1.0]
    a = torch.tensor([[1.0, -1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]])
    assert hamming_distance(a, b).tolist() == [[1.0, 3.0]]


def test_label_similarity_never_nan():
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    for kind in ("binary", "dice", "jaccard"):
        s = label_similarity(y, y, kind)
        assert not torch.isnan(s).any()
        assert s[0, 0] == 0 and s[1, 1] == 1
