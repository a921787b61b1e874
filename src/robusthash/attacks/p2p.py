"""P2P (Bai et al., ECCV 2020): targeted attack toward the code of one database item of the target label."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import IterativeAttack, alpha_schedule, register_attack
from robusthash.codes import binarize
from robusthash.errors import UserError

ANCHOR_DRAWS = ("distinct", "with-replacement")


@register_attack
class P2P(IterativeAttack):
    """Targeted: maximise ``(1/K) a^T tanh(alpha h(x'))`` toward the anchor code ``a`` of the target label.

    Target labels are drawn among the database label rows that occur more than ``n_t`` times (the DHTA code's
    rule) and share no class with the query (robusthash: the DHTA code draws from every such row). The anchor
    code is ``sign(sum of the codes of n_t database items whose label row equals the target)``, sign(0) = +1,
    the items drawn with the query's own generator: ``anchor_draw="distinct"`` (default: n_t different items,
    as the DHTA paper describes the vote) or ``"with-replacement"`` (the DHTA code's ``np.random.choice``;
    measured against each other in docs/choices.md, "DHTA and P2P"). P2P uses n_t = 1 (point to point),
    DHTA n_t = 9. PGD with signed steps of 1/255 for 2,000
    iterations, no random start, with the public alpha schedule (:func:`alpha_schedule`); ``alpha`` (a float)
    and ``random_start`` change both for derived attacks (THA, ATRDH's training attack).
    """

    name: ClassVar[str] = "p2p"
    display_name: ClassVar[str] = "P2P"
    targeted: ClassVar[bool] = True
    default_steps: ClassVar[int] = 2000
    test_options: ClassVar[dict[str, Any]] = {"steps": 30}
    paper: ClassVar[str] = "Bai et al., Targeted attack for deep hashing based retrieval, ECCV 2020"
    n_anchor: ClassVar[int] = 1

    def __init__(
        self,
        model: Any,
        *,
        alpha: float | str = "schedule",
        random_start: bool = False,
        anchor_draw: str = "distinct",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if anchor_draw not in ANCHOR_DRAWS:
            raise UserError(f"anchor_draw must be one of {', '.join(ANCHOR_DRAWS)}, got {anchor_draw!r}")
        self.alpha = alpha
        self.use_random_start = random_start
        self.anchor_draw = anchor_draw

    def target_candidates(self) -> Tensor:
        bank = self.require_database()
        rows, counts = torch.unique(bank.labels.cpu(), dim=0, return_counts=True)
        return rows[(counts > self.n_anchor) & (rows.sum(1) > 0)]

    def anchor_codes(self, targets: Tensor, indices: Tensor | None = None) -> Tensor:
        """The anchor code of each query's target (items drawn with the query's ``anchor`` generator)."""
        bank = self.require_database()
        db_labels = bank.labels.cpu()
        codes = bank.codes.cpu().float()
        indices = torch.arange(targets.shape[0]) if indices is None else indices
        anchors = torch.empty(targets.shape[0], codes.shape[1])
        for row, (target, index) in enumerate(zip(targets.cpu(), indices, strict=True)):
            members = torch.nonzero((db_labels == target).all(1))[:, 0]
            if len(members) == 0:
                raise ValueError(f"no database item carries the target label {target.tolist()}")
            g = self.generator(int(index), "anchor")
            if self.anchor_draw == "distinct":
                chosen = torch.randperm(len(members), generator=g)[: self.n_anchor]
            else:
                chosen = torch.randint(len(members), (self.n_anchor,), generator=g)
            anchors[row] = binarize(codes[members[chosen]].sum(0))
        return anchors

    def perturb(self, x: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor) -> Tensor:
        assert targets is not None
        anchor = self.anchor_codes(targets, indices).to(x.device, x.dtype)
        bits = anchor.shape[1]

        def loss(x_adv: Tensor, step: int) -> Tensor:
            a = alpha_schedule(step, self.steps) if self.alpha == "schedule" else float(self.alpha)
            return (anchor * self.code_output(x_adv, a)).sum() / bits

        return self.pgd(x, loss, self.random_start(x, indices) if self.use_random_start else None)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "alpha": self.alpha,
            "random_start": self.use_random_start,
            "anchor_draw": self.anchor_draw,
        }
