"""ATRDH (Wang et al., SIGIR 2021): adversarial training with targeted examples toward PrototypeNet codes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks import THA
from robusthash.attacks.base import draw_disjoint_row
from robusthash.defenses.base import AdversarialTraining, register_defense
from robusthash.distributed import average_gradients
from robusthash.models.prototype import PrototypeNet, prototype_loss


@register_defense
class ATRDH(AdversarialTraining):
    """Each step, as in the authors' defence code:

    1. clean outputs ``f(x)``; the bank rows of the batch become them;
    2. one Adam step (lr 1e-4, betas 0.5 / 0.999) of a PrototypeNet on the bank (circle loss, see
       :func:`prototype_loss`) for random target labels sharing no class with the batch's labels (drawn from
       the training set's label rows);
    3. targeted adversarial examples toward ``sign(PrototypeNet(target))``: PGD, 7 steps of 2/255, random start,
       plain tanh, model in eval mode (the authors' code leaves it in train mode; eval mode is used for every
       defence here);
    4. ``L = L_ori(f(x)) + mean_ij (f(x'_i)^T U_j / K - S_ij)^2`` with U the bank of clean outputs and
       ``S`` in {-1, +1} the label similarity of x_i to the bank; Adam lr 1e-4, betas 0.5 / 0.999.
    """

    name: ClassVar[str] = "atrdh"
    display_name: ClassVar[str] = "ATRDH"
    default_optimizer: ClassVar[tuple[str, float]] = ("adam", 1e-4)
    paper: ClassVar[str] = "Wang et al., Targeted attack and defense for deep hashing, SIGIR 2021"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.prototype = PrototypeNet(self.bank.labels.shape[1], self.model.bits).to(self.device)
        self.prototype_opt = torch.optim.Adam(self.prototype.parameters(), lr=1e-4, betas=(0.5, 0.999))
        rows = torch.unique(self.bank.labels.cpu(), dim=0)
        self.candidates = rows[rows.sum(1) > 0]
        self.attack = THA(
            self.model,
            prototype=self.prototype,
            eps=cfg.eps,
            steps=cfg.steps,
            step_size=cfg.step_size,
            random_start=True,
            alpha=1.0,
            seed=cfg.seed,
            batch_size=10**9,
            precision=cfg.precision,
        )

    def batch_loss(self, x: Tensor, y: Tensor, idx: Tensor, step: int) -> dict[str, Tensor]:
        self.model.train()
        logits = self.logits(x)
        outputs = torch.tanh(logits)
        self.bank.update(idx, outputs)
        targets = torch.stack([draw_disjoint_row(row, self.candidates, self.generator) for row in y.cpu()])
        targets = targets.to(self.device)
        self.prototype.train()
        loss_p = prototype_loss(self.prototype(targets), targets, self.bank.codes, self.bank.labels)
        self.prototype_opt.zero_grad(set_to_none=True)
        loss_p.backward()
        average_gradients(self.prototype)  # distributed training: one PrototypeNet on every rank
        self.prototype_opt.step()
        self.prototype.eval()
        x_adv = self.craft(x, y, idx, step, targets)
        adv_outputs = torch.tanh(self.logits(x_adv))
        loss_ori = self.loss_fn(self.loss_fn.outputs(logits), y, idx)
        s = 2 * ((y @ self.bank.labels.T) > 0).to(outputs.dtype) - 1
        loss_adv = (adv_outputs @ self.bank.values.T / outputs.shape[1] - s).pow(2).mean()
        return {"loss": loss_ori + loss_adv, "ori": loss_ori, "adv": loss_adv, "prototype": loss_p.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "prototype": self.prototype.state_dict(),
            "prototype_opt": self.prototype_opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.prototype.load_state_dict(state["prototype"])
        self.prototype_opt.load_state_dict(state["prototype_opt"])
