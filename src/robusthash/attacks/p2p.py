"""P2P (Bai et al., ECCV 2020): targeted attack toward the code of one database item of the target label."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import Attack, alpha_schedule
from robusthash.codes import binarize


class P2P(Attack):
    """Targeted: maximise ``(1/K) a^T tanh(alpha h(x'))`` toward the anchor code ``a`` of the target label.

    Target labels are drawn among the database label rows that occur at least ``n_t`` times and share no class
    with the query (as the DHTA code does). The anchor code is ``sign(sum of the codes of n_t database items
    whose label row equals the target)``, the items drawn without replacement (seeded); sign(0) = +1. P2P uses
    n_t = 1 (point to point), DHTA n_t = 9. PGD with signed steps of 1/255 for 2,000 iterations, no random
    start, with the public alpha schedule (:func:`alpha_schedule`).
    """

    name: ClassVar[str] = "p2p"
    targeted: ClassVar[bool] = True
    default_steps: ClassVar[int] = 2000
    paper: ClassVar[str] = "Bai et al., Targeted attack for deep hashing based retrieval, ECCV 2020"
    n_anchor: ClassVar[int] = 1

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)

    def _candidates(self) -> Tensor:
        bank = self.require_database()
        rows, counts = torch.unique(bank.labels.cpu(), dim=0, return_counts=True)
        keep = (counts >= self.n_anchor) & (rows.sum(1) > 0)
        return rows[keep]

    def choose_targets(self, labels: Tensor) -> Tensor:
        candidates = self._candidates()
        overlap = (labels.cpu().float() @ candidates.T) > 0
        scores = torch.rand(overlap.shape, generator=self.generator)
        scores[overlap] -= 2.0
        return candidates[scores.argmax(1)]

    def anchor_codes(self, targets: Tensor) -> Tensor:
        bank = self.require_database()
        db_labels = bank.labels.cpu()
        codes = bank.codes.cpu().float()
        anchors = torch.empty(targets.shape[0], codes.shape[1])
        for i, target in enumerate(targets.cpu()):
            members = torch.nonzero((db_labels == target).all(1))[:, 0]
            if len(members) == 0:
                raise ValueError(f"no database item carries the target label {target.tolist()}")
            pick = members[torch.randperm(len(members), generator=self.generator)[: self.n_anchor]]
            anchors[i] = binarize(codes[pick].sum(0))
        return anchors

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        assert targets is not None
        anchor = self.anchor_codes(targets).to(x.device, x.dtype)
        bits = anchor.shape[1]
        return self.pgd(
            x, lambda xa, s: (anchor * self.code_output(xa, alpha_schedule(s, self.steps))).sum() / bits
        )
