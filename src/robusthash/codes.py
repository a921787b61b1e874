"""Binary codes: the sign rule, Hamming distance, label similarity and the pharos / center code.

The pharos code of PgA (eqs. 7-8), the center code of CgAT (eqs. 4-5) and SAAT's mainstay code are one formula,
the optimum of

    psi(b) = sum_i w_i D_H(b, b_i^(p)) - sum_j w_j D_H(b, b_j^(n))        (PgA appendix A.1, CgAT eq. 3)

over b in {-1, +1}^K, with three weightings. All live in :func:`pharos_code`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from robusthash.errors import UserError

Weighting = Literal["pga", "cgat", "saat"]
Similarity = Literal["binary", "dice", "jaccard", "cosine"]
WEIGHTINGS: tuple[str, ...] = ("pga", "cgat", "saat")
SIMILARITIES: tuple[str, ...] = ("binary", "dice", "jaccard", "cosine")


def binarize(x: Tensor) -> Tensor:
    """``sign`` with the project-wide rule sign(0) = +1, so every code is in {-1, +1} (PgA eq. 1).

    A continuous output of exactly 0 is rare; mapping it to +1 (rather than 0, as ``torch.sign`` does) keeps
    codes binary and Hamming distances integral.
    """
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def hamming_distance(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise Hamming distances between {-1, +1} codes: ``D_H(a, b) = (K - a^T b) / 2`` (PgA sec. 3.2.2)."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"code lengths differ: {a.shape[-1]} and {b.shape[-1]}")
    return 0.5 * (a.shape[-1] - a @ b.transpose(-1, -2))


def label_similarity(labels_a: Tensor, labels_b: Tensor, kind: Similarity = "dice") -> Tensor:
    """Pairwise similarity in [0, 1] of multi-hot label rows, shape (A, B).

    - ``binary``: 1 when the rows share at least one label, else 0 (the hashing convention of relevance).
    - ``dice``: ``2 |y_a & y_b| / (|y_a| + |y_b|)`` (PgA eq. 8).
    - ``jaccard``: ``|y_a & y_b| / |y_a | y_b|``.
    - ``cosine``: ``|y_a & y_b| / sqrt(|y_a| |y_b|)`` (SAAT's mainstay weights).

    Two all-zero rows have similarity 0 under every kind (never NaN).
    """
    a = labels_a.to(torch.float64)
    b = labels_b.to(torch.float64)
    inter = a @ b.T
    if kind == "binary":
        return (inter > 0).to(torch.float64)
    size_a = a.sum(1, keepdim=True)
    size_b = b.sum(1, keepdim=True).T
    if kind == "dice":
        denom = size_a + size_b
        return torch.where(denom > 0, 2 * inter / denom.clamp_min(1e-12), torch.zeros_like(inter))
    if kind == "jaccard":
        union = size_a + size_b - inter
        return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    if kind == "cosine":
        norm = (size_a * size_b).sqrt()
        return torch.where(norm > 0, inter / norm.clamp_min(1e-12), torch.zeros_like(inter))
    raise UserError(f"unknown label similarity {kind!r}; valid: {', '.join(SIMILARITIES)}")


def pharos_code(
    labels: Tensor,
    bank_codes: Tensor,
    bank_labels: Tensor,
    weighting: Weighting = "pga",
    similarity: Similarity | None = None,
) -> Tensor:
    """The optimal representative code of each label row against a code bank, shape (batch, K), in {-1, +1}.

    Positives of a query are the bank items sharing at least one label with it, negatives all the others.
    With ``z`` the label similarity, positives weigh ``w_i = z_i`` and negatives ``w_j = 1 - z_j``
    (``z_j = 0`` for every negative under all three similarities, so negatives weigh 1).

    - ``weighting="pga"`` (PgA eqs. 7-8, similarity ``dice`` by default): the double sum
      ``b* = sign(sum_i sum_j (w_i b_i - w_j b_j)) = sign(N_n sum_i w_i b_i - N_p sum_j w_j b_j)``.
    - ``weighting="cgat"`` (CgAT eqs. 4-5, similarity ``binary`` by default, i.e. M = 1 and s = 1 for every
      pair): ``b* = sign((N / N_p) sum_i s_i b_i - (N / N_n) sum_j s_j b_j)``.

    - ``weighting="saat"`` (SAAT's mainstay code, Yuan et al., TIFS 2023; similarity ``cosine`` by default):
      positives weighted by their similarity normalised to sum 1, negatives uniformly,
      ``b* = sign(sum_i (z_i / sum z) b_i - (1 / N_n) sum_j b_j)``.

    The first two balance positives against negatives by count; with binary similarity all three give the same
    code.

    Documented choices (the papers are silent):

    - sign(0) = +1 (:func:`binarize`), for a zero sum in any bit.
    - A query with no positives (or no negatives) uses the other side alone: ``sign(-sum_j w_j b_j)``
      (or ``sign(sum_i w_i b_i)``). The literal double sum would be identically zero there.
    - A query whose label row is all zero has no positives; it falls under the rule above (never NaN).
    - An empty bank gives +1 everywhere.

    Computed for the whole batch with two matrix products in float64 (exact for binary weights).
    """
    if weighting not in WEIGHTINGS:
        raise UserError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    if similarity is None:
        similarity = {"pga": "dice", "cgat": "binary", "saat": "cosine"}[weighting]
    if labels.ndim != 2 or bank_labels.ndim != 2 or labels.shape[1] != bank_labels.shape[1]:
        raise ValueError(
            f"label widths differ: queries {tuple(labels.shape)}, bank {tuple(bank_labels.shape)}"
        )
    if bank_codes.shape[0] != bank_labels.shape[0]:
        raise ValueError(f"bank has {bank_codes.shape[0]} codes but {bank_labels.shape[0]} label rows")
    device = bank_codes.device
    labels = labels.to(device)
    bank_labels = bank_labels.to(device)
    codes = bank_codes.to(torch.float64)

    positive = (labels.to(torch.float64) @ bank_labels.to(torch.float64).T) > 0
    z = label_similarity(labels, bank_labels, similarity)
    w_pos = torch.where(positive, z, torch.zeros_like(z))
    w_neg = torch.where(positive, torch.zeros_like(z), 1.0 - z)
    sum_pos = w_pos @ codes
    sum_neg = w_neg @ codes

    n_pos = positive.sum(1, keepdim=True).to(torch.float64)
    n_all = float(bank_codes.shape[0])
    n_neg = n_all - n_pos
    one = torch.ones_like(n_pos)
    if weighting == "pga":
        coef_pos = torch.where(n_neg > 0, n_neg, one)
        coef_neg = torch.where(n_pos > 0, n_pos, one)
    elif weighting == "saat":
        z_sum = w_pos.sum(1, keepdim=True)
        coef_pos = torch.where(z_sum > 0, 1 / z_sum.clamp_min(1e-300), torch.zeros_like(z_sum))
        coef_neg = torch.where(n_neg > 0, 1 / n_neg.clamp_min(1), torch.zeros_like(n_neg))
    else:
        coef_pos = torch.where(n_pos > 0, n_all / n_pos.clamp_min(1), torch.zeros_like(n_pos))
        coef_neg = torch.where(n_neg > 0, n_all / n_neg.clamp_min(1), torch.zeros_like(n_neg))
    return binarize(coef_pos * sum_pos - coef_neg * sum_neg).to(bank_codes.dtype)
