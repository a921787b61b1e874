"""The training-set code bank of adversarial training (CgAT Algorithm 1, lines 1 and 7)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from robusthash.attacks import CodeBank
from robusthash.codes import binarize
from robusthash.data import iterate_batches, labels_of
from robusthash.distributed import all_gather_rows
from robusthash.models import HashModel
from robusthash.runtime import eval_mode


class TrainingCodeBank:
    """The latest continuous outputs ``f(x_i)`` of every training item, their codes ``sign f(x_i)`` and labels.

    Initialised with the model in eval mode and without augmentation (Algorithm 1, line 1); after every
    training step the batch's rows are replaced (line 7), so codes computed from the bank (the CgAT center
    codes) are dynamic. :meth:`update` all-gathers the updates of every process when ``torch.distributed`` is
    initialised, so each rank keeps the same bank in multi-process training.
    """

    def __init__(self, values: Tensor, labels: Tensor) -> None:
        self.values = values.detach().clone().float()
        self.codes = binarize(self.values)
        self.labels = labels.float().to(values.device)

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: HashModel, dataset: Dataset, device: torch.device | str) -> TrainingCodeBank:
        values = torch.zeros(len(dataset), model.bits, device=device)
        with eval_mode(model):
            for x, _, idx in iterate_batches(dataset, 500):
                values[idx.to(device)] = model(x.to(device))
        return cls(values, labels_of(dataset).to(device))

    def update(self, indices: Tensor, values: Tensor) -> None:
        indices = indices.to(self.values.device)
        values = values.detach().float().to(self.values.device)
        indices, values = all_gather_rows(indices, values)
        self.values[indices] = values
        self.codes[indices] = binarize(values)

    def view(self) -> CodeBank:
        """A :class:`CodeBank` sharing this bank's tensors (attacks see every later update)."""
        return CodeBank(self.codes, self.labels)

    def state_dict(self) -> dict[str, Tensor]:
        return {"values": self.values.clone(), "labels": self.labels.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore in place, so views handed out earlier (:meth:`view`) stay valid."""
        self.values.copy_(state["values"])
        self.codes.copy_(binarize(self.values))
        self.labels.copy_(state["labels"])
