"""CgAT, center-guided adversarial training (CgAT sec. 3.3, eqs. 4-11, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks import PgA
from robusthash.codes import SIMILARITIES, pharos_code
from robusthash.config import check_finite, option
from robusthash.defenses.base import AdversarialTraining, register_defense
from robusthash.errors import UserError


def center_loss(codes: Tensor, outputs: Tensor) -> Tensor:
    """``L_adv = -(1/K) mean_i b*_i^T f(x'_i)`` (CgAT eq. 10; PgA eq. 16's adversarial term), batch-averaged."""
    return -(codes * outputs).sum(1).mean() / outputs.shape[1]


@dataclass
class CenterOptions:
    """The options of the center-code defences (CgAT, PgA-AT)."""

    lam: float = option(1.0, "weight lambda of the adversarial loss (CgAT eq. 11)")
    similarity: str | None = option(
        None,
        "label similarity of the center codes' weights (eq. 5): binary, dice, "
        "jaccard or cosine (default: binary for CgAT, dice for PgA-AT, cosine for SAAT)",
    )

    def validate(self) -> None:
        check_finite(lam=self.lam)
        if self.lam < 0:
            raise UserError(f"lambda must be >= 0, got {self.lam}")
        if self.similarity is not None and self.similarity not in SIMILARITIES:
            raise UserError(f"unknown similarity {self.similarity!r}; valid: {', '.join(SIMILARITIES)}")


@register_defense
class CgAT(AdversarialTraining):
    """Each step, for a batch (x, y):

    1. adversarial examples maximising eq. (7) ``L_ca = -(1/K) b*^T f(x')`` by PGD (eq. 8: T = 7 steps of
       2/255, eps 8/255, random start, model in eval mode, restored after), with ``b*`` the center codes of
       eq. (4) computed from the dynamic bank with the weights of eq. (5) (similarity ``binary`` by default:
       M = 1, s = 1 for every pair; ``dice`` / ``jaccard`` as options);
    2. ``L_cat = L_ori(f(x)) + lambda L_adv`` (eq. 11) with ``L_adv`` of eq. (10) (:func:`center_loss`);
    3. the batch's bank rows become ``f(x)`` of this step (Algorithm 1, line 7).

    With ``replays`` > 1 (free adversarial training, :meth:`free_examples`), step 1 is replaced by ``x + delta``:
    the gradient of ``lambda L_adv`` that trains the model also moves ``delta`` (eq. 7 ascends what eq. 10
    descends), so no inner attack runs.

    As in the authors' code, the bank is updated with this step's clean outputs (before the parameter update)
    and the center codes of ``L_adv`` are recomputed from the updated bank. The center code is
    :func:`robusthash.codes.pharos_code` with the ``cgat`` weighting; PgA-AT is this class with the ``pga`` one.
    """

    name: ClassVar[str] = "cgat"
    display_name: ClassVar[str] = "CgAT"
    default_optimizer: ClassVar[tuple[str, float]] = ("sgd", 0.01)
    paper: ClassVar[str] = "Wang, Lin and Li, CgAT: center-guided adversarial training for deep hashing"
    weighting: ClassVar[str] = "cgat"
    default_similarity: ClassVar[str] = "binary"
    Options: ClassVar[type] = CenterOptions
    masked: ClassVar[bool] = False
    free: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.similarity = self.options.similarity or self.default_similarity
        self.attack = PgA(
            self.model,
            masked=self.masked,
            weighting=self.weighting,
            similarity=self.similarity,
            reference=self.bank.view(),
            eps=cfg.eps,
            steps=cfg.steps,
            step_size=cfg.step_size,
            random_start=True,
            seed=cfg.seed,
            batch_size=10**9,
            precision=cfg.precision,
        )

    def center_codes(self, labels: Tensor) -> Tensor:
        return pharos_code(labels, self.bank.codes, self.bank.labels, self.weighting, self.similarity)

    def batch_loss(self, x: Tensor, y: Tensor, idx: Tensor, step: int) -> dict[str, Tensor]:
        self.model.train()
        if self.replays > 1:
            x_adv = self.free_examples(x)
        else:
            x_adv = self.craft(x, y, idx, step)
        logits = self.logits(x)
        outputs = torch.tanh(logits)
        adv_outputs = torch.tanh(self.logits(x_adv))
        loss_ori = self.loss_fn(self.loss_fn.outputs(logits), y, idx)
        self.bank.update(idx, outputs)
        loss_adv = center_loss(self.center_codes(y).to(outputs.dtype), adv_outputs)
        extra = self.extra_terms(adv_outputs)
        loss = loss_ori + self.options.lam * loss_adv + sum(extra.values())
        return {"loss": loss, "ori": loss_ori, "adv": loss_adv, **extra}

    def extra_terms(self, adv_outputs: Tensor) -> dict[str, Tensor]:
        """Weighted terms a variant adds to eq. (11) (none for CgAT and PgA-AT)."""
        return {}
