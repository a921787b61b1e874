"""Gaussian-noise training: the certified-robustness baseline (Cohen, Rosenfeld and Kolter, ICML 2019, sec. 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robusthash.config import check_finite, option
from robusthash.defenses.base import AdversarialTraining, register_defense
from robusthash.errors import UserError


@dataclass
class NoiseOptions:
    """The noise of Gaussian training (match it to the smoothing noise the model will be certified with)."""

    sigma: float = option(0.25, "standard deviation of the Gaussian noise added to each training image")

    def validate(self) -> None:
        check_finite(sigma=self.sigma)
        if self.sigma <= 0:
            raise UserError(f"sigma must be > 0 (images in [0, 1]), got {self.sigma}")


@register_defense
class GaussianTraining(AdversarialTraining):
    """Each step trains the hashing loss on ``x + N(0, sigma^2 I)`` instead of ``x``: the base model then gives
    consistent codes under the noise that smoothing adds (:mod:`robusthash.certify`), which is what makes its
    smoothed codes certifiable at larger radii. No attack runs inside the step, so it costs about a clean
    epoch. The noise of step ``t`` is drawn from the run's seed and ``t``, so a resumed run redraws it exactly.
    """

    name: ClassVar[str] = "gaussian"
    display_name: ClassVar[str] = "Gaussian noise"
    default_optimizer: ClassVar[tuple[str, float]] = ("sgd", 0.01)
    paper: ClassVar[str] = (
        "Cohen, Rosenfeld and Kolter, Certified adversarial robustness via randomized smoothing"
    )
    Options: ClassVar[type] = NoiseOptions

    def batch_loss(self, x: Tensor, y: Tensor, idx: Tensor, step: int) -> dict[str, Tensor]:
        self.model.train()
        g = torch.Generator().manual_seed(self.attack_seed(step))
        noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype) * self.options.sigma
        logits = self.logits(x + noise)
        self.bank.update(idx, torch.tanh(logits))
        loss = self.loss_fn(self.loss_fn.outputs(logits), y, idx)
        return {"loss": loss, "ori": loss.detach()}
