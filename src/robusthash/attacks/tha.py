"""THA (Wang et al., SIGIR 2021): targeted attack toward the code a PrototypeNet gives the target label."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robusthash.attacks.base import CodeBank, derive_seed, register_attack
from robusthash.attacks.p2p import P2P
from robusthash.codes import binarize
from robusthash.errors import UserError
from robusthash.models.prototype import PrototypeNet, train_prototype_net


@register_attack
class THA(P2P):
    """Targeted: PGD toward ``sign(PrototypeNet(target label))``.

    :meth:`fit` trains the PrototypeNet on the reference bank (the encoded training set) with the published
    schedule (``prototype_steps`` = 100 epochs x 300 steps, Adam 1e-4); the evaluation times it apart from
    crafting and reports both (the papers count it in the attack's time). Target labels are drawn like P2P's
    (database label rows sharing no class with the query). PGD: 100 signed steps of 1/255 on the plain
    ``tanh`` output, no random start. ``prototype`` passes a ready PrototypeNet (ATRDH trains its own).
    """

    name: ClassVar[str] = "tha"
    display_name: ClassVar[str] = "THA"
    default_steps: ClassVar[int] = 100
    test_options: ClassVar[dict[str, Any]] = {"steps": 30, "prototype_steps": 300}
    paper: ClassVar[str] = "Wang et al., Targeted attack and defense for deep hashing, SIGIR 2021"

    def __init__(
        self,
        model: Any,
        *,
        prototype: PrototypeNet | None = None,
        prototype_steps: int = 30_000,
        alpha: float | str = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, alpha=alpha, **kwargs)
        if not isinstance(prototype_steps, int) or prototype_steps < 1:
            raise UserError(f"prototype_steps must be a positive integer, got {prototype_steps!r}")
        self.prototype = prototype
        self.prototype_steps = prototype_steps

    def fit(self, reference: CodeBank | None = None, quiet: bool = True, train: Any = None) -> THA:
        """Train the PrototypeNet on ``reference`` (default: the attack's reference bank)."""
        bank = reference or self.require_reference()
        candidates = torch.unique(bank.labels.cpu(), dim=0)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "fit"))
        self.prototype = train_prototype_net(
            bank.codes,
            bank.labels.to(bank.codes.device),
            candidates[candidates.sum(1) > 0],
            self.prototype_steps,
            generator=generator,
            quiet=quiet,
        )
        return self

    @property
    def is_fitted(self) -> bool:
        return self.prototype is not None

    def fitted_state(self) -> dict[str, Any]:
        if self.prototype is None:
            raise UserError("THA is not fitted yet: call fit() first")
        return {
            "prototype": self.prototype.state_dict(),
            "num_classes": self.prototype.num_classes,
            "bits": self.prototype.bits,
        }

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        self.prototype = PrototypeNet(int(state["num_classes"]), int(state["bits"]))
        self.prototype.load_state_dict(state["prototype"])
        self.prototype.eval()

    def anchor_codes(self, targets: Tensor, indices: Tensor | None = None) -> Tensor:
        if self.prototype is None:
            raise UserError("THA needs fit() first: it trains its PrototypeNet on the reference bank")
        device = next(self.prototype.parameters()).device
        with torch.no_grad():
            return binarize(self.prototype(targets.float().to(device))).cpu()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prototype_steps": self.prototype_steps}
