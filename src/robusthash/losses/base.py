"""What every hashing loss provides, and the pairwise-similarity helpers they share."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robusthash.distributed import all_gather_rows
from robusthash.registry import Registry


class HashLoss(nn.Module):
    """A hashing objective ``L_ori`` on the continuous codes ``u = f(x)`` of a training batch.

    ``forward(u, labels, indices)``: ``u = tanh(h)`` (or the logits h when ``takes_logits``; use
    :meth:`outputs`), ``labels`` are multi-hot (B, C), ``indices`` the items' positions in the
    training split (bank-based losses keep the codes of the whole training set). State such as code banks
    lives in buffers, so it is saved in checkpoints and restored on resume.
    """

    name: str = ""
    display_name: str = ""
    takes_logits: bool = False  # True: forward receives the logits h, not tanh(h) (HashNet's continuation)

    def outputs(self, logits: Tensor) -> Tensor:
        """What :meth:`forward` takes from the model's logits: ``tanh(h)``, or ``h`` itself."""
        return logits if self.takes_logits else torch.tanh(logits)

    def forward(self, u: Tensor, labels: Tensor, indices: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError  # abstract

    def epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called before each training epoch (DSDH's discrete update, HashNet's continuation)."""

    def preinstall(self, outputs: Tensor, labels: Tensor) -> None:
        """Start from the outputs f(x_i) of the whole training set (adversarial training of a trained model)."""


def pairwise_similarity(labels_a: Tensor, labels_b: Tensor) -> Tensor:
    """1 where two items share at least one label, else 0, shape (A, B)."""
    return ((labels_a @ labels_b.T) > 0).to(labels_a.dtype)


class BankLoss(HashLoss):
    """A loss over pairs (batch item, training item) using a bank of the latest training outputs ``U``.

    ``live_batch=True`` (robusthash's default, measured better in clean mAP: docs/choices.md, "Bank losses"): the
    batch's own rows of the bank stay differentiable, so a pair (i, i) and pairs within the batch carry gradient
    through both sides. ``live_batch=False`` is DeepHash-pytorch's rule (``U[ind] = u.data``): the bank is a
    constant and the gradient flows through the batch's outputs on the left only (twice the authors' gradient on
    an empty bank otherwise).
    """

    def __init__(self, bits: int, num_classes: int, num_train: int, live_batch: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self.live_batch = bool(live_batch)
        self.register_buffer("U", torch.zeros(num_train, bits))
        self.register_buffer("Y", torch.zeros(num_train, num_classes))

    def preinstall(self, outputs: Tensor, labels: Tensor) -> None:
        self.U.copy_(outputs)
        self.Y.copy_(labels)

    def update_bank(self, u: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        """Store the batch in the bank; return the bank, its batch rows live (differentiable) under
        ``live_batch``. In distributed training the rows of every rank's batch are stored (gathered), so the
        banks stay equal."""
        rows = torch.cat([u.detach().to(self.U.dtype), labels.to(self.Y.dtype)], 1)
        where, rows = all_gather_rows(indices.to(self.U.device), rows)
        self.U[where] = rows[:, : self.bits]
        self.Y[where] = rows[:, self.bits :]
        return self.U.index_put((indices,), u) if self.live_batch else self.U.clone()


LOSSES: Registry[type[HashLoss]] = Registry("loss")
register_loss = LOSSES.register
