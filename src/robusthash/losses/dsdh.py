"""DSDH (Li et al., NeurIPS 2017) and DSDH-C (Doan et al., CVPR 2022): supervised discrete hashing."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from robusthash.codes import binarize
from robusthash.losses.base import BankLoss, pairwise_similarity, register_loss


def ridge_classifier(codes: Tensor, labels: Tensor, mu: float, nu: float) -> Tensor:
    """W-step: ``W = (B B^T + (nu / mu) I)^-1 B Y^T``, the minimiser of ``mu ||Y - W^T B||^2 + nu ||W||^2``.

    ``codes`` B is (K, N), ``labels`` Y is (C, N); W is (K, C).
    """
    bits = codes.shape[0]
    gram = codes @ codes.T + (nu / mu) * torch.eye(bits, dtype=codes.dtype, device=codes.device)
    return torch.linalg.solve(gram, codes @ labels.T)


def discrete_code_update(
    codes: Tensor,
    weights: Tensor,
    labels: Tensor,
    outputs: Tensor,
    mu: float,
    eta: float,
    sign: Callable[[Tensor], Tensor] = binarize,
) -> Tensor:
    """B-step by discrete cyclic coordinate descent: one pass over the bits, each row of B set to
    ``sign(p_k - B'^T W' w_k)`` with ``P = W Y + (eta / mu) U``: the exact minimiser of
    ``mu ||Y - W^T B||^2 + eta ||B - U||^2`` over row k with the other rows fixed (DSDH sec. 3.2).
    Shapes: B, U (K, N); W (K, C); Y (C, N). Returns the new B (a new tensor). ``sign``: :func:`binarize`
    (0 -> +1), or ``torch.sign`` as the public re-implementations (0 stays 0)."""
    codes = codes.clone()
    p = weights @ labels + (eta / mu) * outputs
    gram = weights @ weights.T  # B'^T W' w_k = B^T (W w_k) - b_k (w_k . w_k): no copy of the other rows
    for k in range(codes.shape[0]):
        codes[k] = sign(p[k] - codes.T @ gram[k] + codes[k] * gram[k, k])
    return codes


UPDATES = ("epoch", "batch")


@register_loss
class DSDHLoss(BankLoss):
    """DPSH's pairwise likelihood plus the linear classifier on discrete codes, alternating as in DSDH:

    - network step: ``mean_ij [log(1 + e^theta) - s theta] + mu mean (Y - W^T B)^2 + nu mean W^2
      + quant mean_i (u_i - b_i)^2`` with ``theta = u U^T / 2``. B and W are constants there, so the
      classifier terms carry no gradient; the network follows the discrete codes only through the last term
      (the paper's ``eta ||b - u||^2``, eq. 6, with weight ``quant`` on the mean-normalised loss).
    - ``dcc_iter`` rounds of the closed-form W-step (:func:`ridge_classifier`) and the discrete cyclic B-step
      (:func:`discrete_code_update`) on the bank U of training outputs, mu = 1, nu = 1, eta = 55 (the public
      re-implementations' values). ``update="batch"`` (DeepHash-pytorch and TreezzZ/DSDH_PyTorch): before every
      batch's loss, B carried over from the last batch, codes by ``torch.sign`` (an item not yet seen keeps code
      0). ``update="epoch"``: at the start of every epoch, B restarting from sign(U).

    The default is the public code's rule, ``update="batch", quant=0, live_batch=False``: the network never sees B
    (DPSH's likelihood alone, B and W bookkeeping). ``update="epoch", quant=0.1, live_batch=True`` couples the
    network to the codes as the paper's eq. 6 reads; it trained worse on the embedded recipe (docs/choices.md,
    "DSDH"). Everything lives in the loss object (banks, B, W), so it runs inside the library and resumes from
    checkpoints.
    """

    name = "dsdh"
    display_name = "DSDH"

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        mu: float = 1.0,
        nu: float = 1.0,
        eta: float = 55.0,
        dcc_iter: int = 10,
        quant: float = 0.0,
        update: str = "batch",
        live_batch: bool = False,
    ) -> None:
        super().__init__(bits, num_classes, num_train, live_batch)
        if update not in UPDATES:
            raise ValueError(f"DSDH update must be one of {', '.join(UPDATES)}, got {update!r}")
        self.mu, self.nu, self.eta, self.dcc_iter, self.quant = mu, nu, eta, dcc_iter, quant
        self.update = update
        self.register_buffer("B", torch.zeros(num_train, bits))
        self.register_buffer("W", torch.zeros(bits, num_classes))

    def alternate(self, sign: Callable[[Tensor], Tensor]) -> None:
        """``dcc_iter`` rounds of the W-step and the B-step from the current B, on the bank."""
        codes, labels, outputs = self.B.T.clone(), self.Y.T, self.U.T
        weights = self.W.clone()
        for _ in range(self.dcc_iter):
            weights = ridge_classifier(codes, labels, self.mu, self.nu)
            codes = discrete_code_update(codes, weights, labels, outputs, self.mu, self.eta, sign)
        self.B.copy_(codes.T)
        self.W.copy_(weights)

    def epoch_start(self, epoch: int, num_epochs: int) -> None:
        if self.update != "epoch":
            return
        if not self.U.abs().sum():  # nothing seen yet: start B from random codes so the steps are defined
            g = torch.Generator().manual_seed(epoch)
            self.B.copy_(torch.where(torch.rand(self.B.shape, generator=g) < 0.5, -1.0, 1.0))
        else:
            self.B.copy_(binarize(self.U))
        self.alternate(binarize)

    def forward(self, u: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        bank = self.update_bank(u, labels, indices)
        if self.update == "batch":
            with torch.no_grad():
                self.alternate(torch.sign)
        s = pairwise_similarity(labels, self.Y)
        theta = 0.5 * u @ bank.T
        likelihood = (F.softplus(theta) - s * theta).mean()
        b = self.B[indices]
        classifier = (labels - b @ self.W).pow(2).mean()
        reg = self.W.pow(2).mean()
        loss = likelihood + self.mu * classifier + self.nu * reg + self.extra(u)
        return loss + self.quant * (u - b).pow(2).mean() if self.quant else loss

    def extra(self, u: Tensor) -> Tensor:
        return u.new_zeros(())


def balanced_wasserstein(u: Tensor) -> Tensor:
    """Per-bit squared 1-D Wasserstein distance between the batch's outputs and the balanced {-1, +1}
    distribution, averaged over bits: ``mean_k (1/n) sum_i (sort(u_k)_i - q_i)^2`` with q the quantiles of the
    target (-1 for the lower half of the ranks, +1 for the upper; the middle rank of an odd batch at 0).

    Doan et al.'s coordinate-wise sliced-Wasserstein quantisation loss; the reference code compares to a fresh
    random +-1 sample each step, this compares to the target's quantile function, which is deterministic.
    """
    n = u.shape[0]
    ranks = torch.arange(n, device=u.device, dtype=u.dtype)
    target = torch.sign(ranks - (n - 1) / 2)
    ordered, _ = torch.sort(u, dim=0)
    return (ordered - target[:, None]).pow(2).mean()


@register_loss
class DSDHCLoss(DSDHLoss):
    """DSDH-C: DSDH plus ``0.1 x`` :func:`balanced_wasserstein` (Doan et al., CVPR 2022), on DSDH's coupled
    per-epoch rule (``update="epoch", quant=0.1, live_batch=True``), the rule its rows were measured with."""

    name = "dsdh-c"
    display_name = "DSDH-C"

    def __init__(
        self,
        bits: int,
        num_classes: int,
        num_train: int,
        quantization_weight: float = 0.1,
        quant: float = 0.1,
        update: str = "epoch",
        live_batch: bool = True,
        **kwargs: float,
    ) -> None:
        super().__init__(
            bits, num_classes, num_train, quant=quant, update=update, live_batch=live_batch, **kwargs
        )
        self.quantization_weight = quantization_weight

    def extra(self, u: Tensor) -> Tensor:
        return self.quantization_weight * balanced_wasserstein(u)
