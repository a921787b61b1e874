"""THA (Wang et al., SIGIR 2021): targeted attack toward the code a PrototypeNet gives the target label."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.p2p import P2P
from robusthash.codes import binarize
from robusthash.models.prototype import PrototypeNet, train_prototype_net


class THA(P2P):
    """Targeted: PGD toward ``sign(PrototypeNet(target label))``.

    The PrototypeNet is fitted to the reference bank (the encoded training set) on the first call, with the
    published schedule (``prototype_steps`` = 100 epochs x 300 steps, Adam 1e-4); its time counts in the
    attack's time, as in the papers. Target labels are drawn like P2P's (database label rows sharing no class
    with the query). PGD: 100 signed steps of 1/255 on the plain ``tanh`` output, no random start.
    ``prototype`` passes a ready PrototypeNet (ATRDH trains its own).
    """

    name: ClassVar[str] = "tha"
    default_steps: ClassVar[int] = 100
    paper: ClassVar[str] = "Wang et al., Targeted attack and defense for deep hashing, SIGIR 2021"

    def __init__(self, model: Any, *, prototype: PrototypeNet | None = None, prototype_steps: int = 30_000,
                 alpha: float | str = 1.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(model, alpha=alpha, **kwargs)
        self.prototype = prototype
        self.prototype_steps = prototype_steps

    def anchor_codes(self, targets: Tensor) -> Tensor:
        if self.prototype is None:
            bank = self.require_reference()
            device = bank.codes.device
            candidates = torch.unique(bank.labels.cpu(), dim=0)
            self.prototype = train_prototype_net(
                bank.codes, bank.labels.to(device), candidates[candidates.sum(1) > 0], self.prototype_steps,
                generator=self.generator, quiet=self.quiet,
            )  # fmt: skip
        device = next(self.prototype.parameters()).device
        with torch.no_grad():
            return binarize(self.prototype(targets.float().to(device))).cpu()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prototype_steps": self.prototype_steps}
