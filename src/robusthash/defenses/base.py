"""Adversarial training: one :class:`AdversarialTraining` method per defence (how a training step makes and
uses adversarial examples), run by the one training loop of :mod:`robusthash.training`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from robusthash.attacks import derive_seed
from robusthash.checkpoint import Checkpoint
from robusthash.codes import SIMILARITIES
from robusthash.config import check_finite, option, recorded_as
from robusthash.data import DatasetSplits
from robusthash.defenses.codebank import TrainingCodeBank
from robusthash.errors import UserError
from robusthash.losses import create_loss
from robusthash.models import HashModel
from robusthash.records import ModelRecord
from robusthash.registry import Registry
from robusthash.runtime import check_precision, check_seed, environment, model_fingerprint, seed_everything
from robusthash.training import TrainingMethod, TrainingPlan, run_training

# the fields of DefenseConfig that only some defences read (each defence's ``uses`` names its own)
METHOD_FIELDS: tuple[str, ...] = ("lam", "similarity")


@recorded_as("defense")
@dataclass
class DefenseConfig:
    """Settings of an adversarial-training run. ``None`` means the method's published default.

    CgAT (CgAT sec. 4.1): SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 32, PGD T = 7 of 2/255 in an
    8/255 ball, lambda = 1, 30 epochs; the learning rate drops 10x at 1/2 and 3/4 of the steps (the authors'
    code, for every method). The embedded default runs 3 epochs (each is ~20 s on two CPU cores for
    the 5,000 Fashion-MNIST training images), which is what keeps ``robusthash demo`` within minutes.
    """

    method: str = option("cgat", "adversarial-training method")
    epochs: int = option(3, "adversarial-training epochs (the paper: 30)")
    batch_size: int = option(32, "images per training batch")
    optimizer: str | None = option(None, "sgd or adam (default: the method's published one)")
    lr: float | None = option(None, "learning rate (default: the method's published one)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay")
    eps: float = option(8 / 255, "L-inf budget of the training attack (pixel levels of 255)", cli_scale=255)
    steps: int = option(7, "PGD steps of the training attack")
    step_size: float = option(2 / 255, "PGD step of the training attack (pixel levels)", cli_scale=255)
    lam: float = option(1.0, "weight lambda of the adversarial loss")
    similarity: str | None = option(None, "label similarity of the center codes: binary, dice or jaccard")
    seed: int = option(0, "seed of the shuffling and the training attacks")
    precision: str = option("fp32", "fp32, or bf16: autocast of the forward and backward passes")

    def validate(self) -> None:
        check_seed(self.seed)
        check_precision(self.precision)
        cls = DEFENSES.get(self.method)
        defaults = {f.name: f.default for f in fields(self)}
        unused = [f"{name}={getattr(self, name)!r}" for name in METHOD_FIELDS
                  if name not in cls.uses and getattr(self, name) != defaults[name]]  # fmt: skip
        if unused:
            raise UserError(f"defence {self.method} does not use {', '.join(unused)} (it reads "
                            f"{', '.join(sorted(cls.uses)) or 'no method-specific option'}); leave it out")
        check_finite(lr=self.lr, lam=self.lam, eps=self.eps, step_size=self.step_size, momentum=self.momentum,
                     weight_decay=self.weight_decay)  # fmt: skip
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise UserError(f"batch size must be >= 2 (batch norm needs two items), got {self.batch_size}")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if self.lam < 0:
            raise UserError(f"lambda must be >= 0, got {self.lam}")
        if self.optimizer not in (None, "sgd", "adam"):
            raise UserError(f"unknown optimizer {self.optimizer!r}; valid: sgd, adam")
        if not 0 <= self.eps <= 1:
            raise UserError(f"eps must lie in [0, 1] (image units), got {self.eps}")
        if self.steps < 0 or self.step_size <= 0:
            raise UserError(f"steps must be >= 0 and step_size > 0, got {self.steps} and {self.step_size}")
        if self.similarity is not None and self.similarity not in SIMILARITIES:
            raise UserError(f"unknown similarity {self.similarity!r}; valid: {', '.join(SIMILARITIES)}")


class AdversarialTraining(TrainingMethod):
    """Base class of the defences. Subclasses set ``name``, ``display_name`` and ``default_optimizer`` and
    implement :meth:`batch_loss`.

    Shared by all: the dynamic code bank of the training set (CgAT Algorithm 1, lines 1 and 7), the method's
    published optimiser, the learning rate dropped 10x at 1/2 and 3/4 of the steps (the authors' code), and
    :meth:`attack_seed`, which gives each step's training attack its own seed so that the random starts of an
    item differ from epoch to epoch and a resumed run redraws exactly what the uninterrupted one drew.
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    default_optimizer: ClassVar[tuple[str, float]] = ("sgd", 0.01)
    paper: ClassVar[str] = ""
    test_options: ClassVar[dict[str, Any]] = {}
    # the method-specific fields of DefenseConfig (METHOD_FIELDS) this method reads; setting another is an error
    uses: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model: HashModel, loss_fn: Any, data: DatasetSplits, device: torch.device,
                 generator: torch.Generator, *, config: DefenseConfig) -> None:  # fmt: skip
        super().__init__(model, loss_fn, data, device, generator)
        self.config = config
        self.bank = TrainingCodeBank.from_model(model, data.train, device)
        loss_fn.preinstall(self.bank.values, self.bank.labels)

    def make_optimizer(self) -> torch.optim.Optimizer:
        name, lr = self.default_optimizer
        name = self.config.optimizer or name
        lr = self.config.lr if self.config.lr is not None else lr
        if name == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=lr, momentum=self.config.momentum,
                                   weight_decay=self.config.weight_decay)  # fmt: skip
        return torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.5, 0.999))

    def lr_factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        return 0.1 ** ((step >= total_steps // 2) + (step >= total_steps * 3 // 4))

    def attack_seed(self, step: int) -> int:
        return derive_seed(self.config.seed, "training-attack", step)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bank": self.bank.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.bank.load_state_dict(state["bank"])


DEFENSES: Registry[type[AdversarialTraining]] = Registry("defence")
register_defense = DEFENSES.register


@dataclass
class DefenseResult:
    model: HashModel
    history: list[dict[str, float]]
    path: Path | None
    seconds: float
    base_fingerprint: str = ""


def defend(
    base: Checkpoint,
    data: DatasetSplits,
    config: DefenseConfig,
    out: str | Path | None = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    quiet: bool = False,
    model: torch.nn.Module | None = None,
) -> DefenseResult:
    """Adversarially train the model of checkpoint ``base`` on ``data.train`` with ``config.method``.

    ``model`` passes the base model itself (one you brought, see :func:`robusthash.models.wrap_model`); the
    checkpoint then only supplies the training recipe it was trained with.
    """
    config.validate()
    cls = DEFENSES.get(config.method)
    device = torch.device(device)
    generator = seed_everything(config.seed)
    model = (base.build_model(device) if model is None else model.to(device)).train()
    record = base.record
    loss_fn = create_loss(record.loss, model.bits, data.num_classes, len(data.train),
                          **record.loss_options).to(device)  # fmt: skip
    fingerprint = model_fingerprint(model)
    meta = ModelRecord("defended", record.model, record.train, record.dataset,
                       defense={"method": cls.name, "config": asdict(config), "base_checkpoint": str(base.path),
                                "base_seed": record.seed, "base_fingerprint": fingerprint},
                       seed=config.seed, environment=environment(device)).to_meta()  # fmt: skip
    method = cls(model, loss_fn, data, device, generator, config=config)
    plan = TrainingPlan(config.epochs, config.batch_size, meta, Path(out) if out else None, device,
                        resume, quiet, cls.name, config.precision)  # fmt: skip
    history, seconds = run_training(model, method, data, plan)
    return DefenseResult(model, history, Path(out) if out else None, seconds, fingerprint)
