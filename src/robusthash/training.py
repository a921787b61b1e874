"""Training: one loop (seeded, progress, atomic per-epoch checkpoints, exact resume) for clean training and
every adversarial-training method. A :class:`TrainingMethod` supplies the per-batch loss, its optimiser and its
learning-rate schedule; :func:`run_training` does the rest. :func:`train` is clean training (``L_ori`` alone).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robusthash.checkpoint import read_checkpoint, save_checkpoint
from robusthash.config import check_finite, option, recorded_as
from robusthash.data import DatasetSplits, augment, iterate_batches
from robusthash.distributed import World, barrier, broadcast_buffers, data_parallel, epoch_indices, world
from robusthash.errors import UserError
from robusthash.losses import HashLoss, create_loss
from robusthash.models import HashModel, create_model
from robusthash.records import ModelRecord
from robusthash.runtime import (
    autocast,
    check_precision,
    check_seed,
    environment,
    exclusive_output,
    seed_everything,
)

OPTIMIZERS = ("adamw", "sgd")
MAX_BITS = 4096  # far above the papers' 12-128; bounds the hash layer and every (N, K) code matrix


@recorded_as("train")
@dataclass
class TrainConfig:
    """A training recipe. The defaults are the embedded recipe: DPH on ``small_cnn``, 32 bits, Fashion-MNIST.

    The papers train with SGD (lr 0.01, momentum 0.9, weight decay 5e-4, batch 32) from ImageNet weights; the
    default is AdamW (lr 1e-3, cosine schedule, batch 32, 20 epochs, no augmentation), which trains better from
    scratch on a CPU (docs/choices.md, "Training"); ``optimizer="sgd"`` with ``lr=0.01`` restores the papers'.
    DPH is the model the PgA paper attacks by default; pass ``loss="dpsh"`` for the CgAT paper's default.
    """

    backbone: str = option("small_cnn", "backbone (see 'robusthash datasets' / models list)")
    bits: int = option(32, "code length K")
    loss: str = option("dph", "hashing loss")
    epochs: int = option(20, "training epochs")
    batch_size: int = option(32, "images per training batch")
    optimizer: str = option("adamw", "adamw or sgd (the papers' recipe, with --lr 0.01)")
    lr: float = option(1e-3, "learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay")
    augment: bool = option(False, "random shift-and-flip augmentation")
    seed: int = option(0, "seed of the initialisation, shuffling and augmentation")
    pretrained: str | None = option(None, "local torchvision ImageNet weights for the backbone")
    input_size: int | None = option(None, "resize inputs to this side inside the model (e.g. 64)")
    loss_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the loss's own options"})
    precision: str = option("fp32", "fp32, or bf16: autocast of the forward and backward passes")

    def validate(self) -> None:
        from robusthash.losses import LOSSES
        from robusthash.models import BACKBONES

        BACKBONES.get(self.backbone)
        LOSSES.get(self.loss)
        if not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            raise UserError(f"bits must be an integer in [1, {MAX_BITS}], got {self.bits!r}")
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise UserError(f"batch size must be >= 2 (batch norm needs two items), got {self.batch_size}")
        check_seed(self.seed)
        check_precision(self.precision)
        check_finite(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.lr <= 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.input_size is not None and self.input_size < 1:
            raise UserError(f"input size must be >= 1, got {self.input_size}")


def dataset_meta(data: DatasetSplits, options: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about its data: enough to reload the same splits."""
    return {
        "name": data.name,
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape),
        "class_names": data.class_names,
        **options,
    }


def build_model(config: TrainConfig, data: DatasetSplits) -> HashModel:
    return create_model(
        config.backbone,
        config.bits,
        data.image_shape[0],
        data.mean,
        data.std,
        data.image_shape[-1],
        config.pretrained,
        config.input_size,
    )


class TrainingMethod:
    """How one training step turns a batch into a loss. Subclasses implement :meth:`batch_loss` and may keep
    state (banks, generators, auxiliary networks) through :meth:`state_dict` / :meth:`load_state_dict`.

    ``generator`` is the loop's seeded CPU generator (it also shuffles the batches). Forward passes whose
    gradients train the model go through :meth:`logits` (the :class:`DistributedDataParallel` wrapper in a
    distributed run, which averages the gradients over the ranks); attacks inside a step use ``model`` itself.
    """

    name: ClassVar[str] = "clean"
    parallel: nn.Module | None = None  # set by run_training under torchrun
    replays: int = 1  # optimiser steps per batch (free adversarial training replays each batch)

    def __init__(
        self,
        model: nn.Module,
        loss_fn: HashLoss,
        data: DatasetSplits,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.device = device
        self.generator = generator

    def logits(self, x: Tensor) -> Tensor:
        """The model's logits ``h(x)`` for a training forward pass."""
        return self.model.preactivation(x) if self.parallel is None else self.parallel(x)

    def make_optimizer(self) -> torch.optim.Optimizer:  # pragma: no cover - abstract
        raise NotImplementedError  # abstract: the method's optimiser over the model's parameters

    def lr_factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """The learning-rate multiplier at ``step`` (0-based, counted in batches)."""
        return 1.0

    def batch_loss(
        self, x: Tensor, y: Tensor, idx: Tensor, step: int
    ) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError  # abstract: the loss terms; "loss" is minimised

    def after_backward(self) -> None:
        """Called after each step's backward pass, before the optimiser step (gradients are in place)."""

    def epoch_start(self, epoch: int, epochs: int) -> None:
        self.loss_fn.epoch_start(epoch, epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss_fn.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_fn.load_state_dict(state["loss"])


class CleanTraining(TrainingMethod):
    """``L_ori`` of the hashing loss on clean (optionally augmented) batches; cosine learning rate per epoch."""

    def __init__(self, *args: Any, config: TrainConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = config

    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        return torch.optim.AdamW(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def lr_factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / self.config.epochs))

    def batch_loss(self, x: Tensor, y: Tensor, idx: Tensor, step: int) -> dict[str, Tensor]:
        self.model.train()
        if self.config.augment:
            x = augment(x, self.generator)
        return {"loss": self.loss_fn(self.loss_fn.outputs(self.logits(x)), y, idx)}


def _differing(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ, nested ones dotted (``train.lr``)."""
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differing(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


@dataclass
class TrainingPlan:
    """How :func:`run_training` runs: ``epochs`` of ``batch_size`` (the global batch under torchrun), the
    checkpoint's ``meta``, the output ``out`` (None: nothing saved), ``device``, ``precision``, ``resume``, and
    the progress bar (``desc``, ``quiet``)."""

    epochs: int
    batch_size: int
    meta: dict[str, Any]
    out: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    resume: bool = True
    quiet: bool = False
    desc: str = "train"
    precision: str = "fp32"


def run_training(
    model: nn.Module, method: TrainingMethod, data: DatasetSplits, plan: TrainingPlan
) -> tuple[list[dict[str, float]], float]:
    """Train ``model`` with ``method`` for ``plan.epochs`` over ``data.train``; returns (history, seconds).

    With ``plan.out``, the model, the method's state, the optimiser, the schedule and the generators are saved
    atomically after every epoch, and a later call resumes from there; a checkpoint whose
    :meth:`~robusthash.records.ModelRecord.recipe` differs from this run's is refused, naming the settings that
    differ. A last batch of
    one item is dropped (batch norm cannot train on it). ``precision="bf16"`` computes each batch's loss (and
    any training attack inside it) under bf16 autocast; the weights and the optimiser stay fp32. ``out`` is
    locked for the run (:func:`~robusthash.runtime.exclusive_output`): a second run on the same output is refused.
    """
    if plan.out is None:
        return _run_training(model, method, data, plan)
    with exclusive_output(plan.out):
        return _run_training(model, method, data, plan)


def _run_training(
    model: nn.Module, method: TrainingMethod, data: DatasetSplits, plan: TrainingPlan
) -> tuple[list[dict[str, float]], float]:
    epochs, batch_size, meta, path = plan.epochs, plan.batch_size, plan.meta, plan.out
    device, resume, quiet, desc, precision = plan.device, plan.resume, plan.quiet, plan.desc, plan.precision
    optimizer = method.make_optimizer()
    w = world()
    local_batch = batch_size
    if w.distributed:  # the global batch stays batch_size: each rank takes its share of it
        if batch_size % w.world_size or batch_size // w.world_size < 2:
            raise UserError(
                f"batch size {batch_size} must be a multiple of the world size {w.world_size} with at "
                "least 2 items per rank (batch norm)"
            )
        local_batch = batch_size // w.world_size
        method.parallel = data_parallel(_Logits(model), device)
    per_rank = -(-len(data.train) // w.world_size)
    batches = per_rank // local_batch + (per_rank % local_batch > 1)
    per_epoch = batches * method.replays  # optimiser steps: a replayed batch counts once per replay
    total = epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: method.lr_factor(s, per_epoch, total))
    history: list[dict[str, float]] = []
    start_epoch = 0
    if path is not None and resume and path.exists():
        ckpt = read_checkpoint(path, map_location=device)
        stored, recipe = ckpt.record.recipe(), ModelRecord.from_meta(meta).recipe()
        if stored != recipe:
            differ = ", ".join(_differing(stored, recipe)) or "the kind of run"
            raise UserError(
                f"{path} holds a run with other settings ({differ}); choose another --out or pass "
                "--no-resume to start over"
            )
        model.load_state_dict(ckpt.state["model"])
        history = list(ckpt.record.history)
        start_epoch = int(ckpt.state["epoch"])
        if start_epoch < epochs:
            method.load_state_dict(ckpt.state["method"])
            optimizer.load_state_dict(ckpt.state["optimizer"])
            scheduler.load_state_dict(ckpt.state["scheduler"])
            method.generator.set_state(ckpt.state["rng"])
            torch.set_rng_state(ckpt.state["torch_rng"])
    began = time.perf_counter()
    # no bar when a finished checkpoint (or the zoo's copy) leaves nothing to train
    bar = tqdm(
        total=total, initial=start_epoch * per_epoch, desc=desc, disable=quiet or start_epoch >= epochs
    )
    for epoch in range(start_epoch, epochs):
        epoch_began = time.perf_counter()
        method.epoch_start(epoch, epochs)
        sums: dict[str, float] = {}
        n = 0
        for x, y, idx in _epoch_batches(data.train, local_batch, method.generator, epoch, w):
            if len(idx) < 2:
                continue
            x, y, idx = x.to(device), y.to(device), idx.to(device)
            for _ in range(method.replays):
                with autocast(device, precision):
                    terms = method.batch_loss(x, y, idx, epoch * per_epoch + n)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise UserError(
                        f"the training loss became {float(loss.detach())} in epoch {epoch + 1}; lower the "
                        "learning rate (the last good checkpoint is kept)"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                method.after_backward()
                optimizer.step()
                scheduler.step()
                n += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.update(1)
                bar.set_postfix({k: f"{v / n:.4f}" for k, v in sums.items()}, refresh=False)
        history.append(
            {
                "epoch": epoch + 1,
                **{k: v / max(n, 1) for k, v in sums.items()},
                "seconds": time.perf_counter() - epoch_began,
            }
        )
        broadcast_buffers(model)  # every rank ends the epoch with the model rank 0 saves
        if path is not None:
            save_checkpoint(
                path,
                {**meta, "history": history},
                model,
                method=method.state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                rng=method.generator.get_state(),
                torch_rng=torch.get_rng_state(),
                epoch=epoch + 1,
            )
            barrier()  # rank 0 wrote it: every rank may read it from here on
    bar.close()
    method.parallel = None
    model.eval()
    return history, time.perf_counter() - began


class _Logits(nn.Module):
    """``model.preactivation`` as a module's forward: what DistributedDataParallel wraps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.preactivation(x)


def _epoch_batches(dataset: Any, batch_size: int, generator: torch.Generator, epoch: int, w: World) -> Any:
    """One epoch's shuffled batches: in one process a permutation of ``generator``; in a distributed job each
    rank's share of :func:`~robusthash.distributed.epoch_indices` (the sampler's seed drawn from ``generator``,
    so every rank draws the same and a resumed run redraws it)."""
    if not w.distributed:
        return iterate_batches(dataset, batch_size, shuffle=True, generator=generator)
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    return iterate_batches(dataset, batch_size, indices=epoch_indices(len(dataset), seed, epoch, w))


@dataclass
class TrainResult:
    model: HashModel
    loss: HashLoss
    history: list[dict[str, float]]
    path: Path | None
    seconds: float


def train(
    data: DatasetSplits,
    config: TrainConfig,
    out: str | Path | None = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    dataset_options: dict[str, Any] | None = None,
    quiet: bool = False,
    model: nn.Module | None = None,
) -> TrainResult:
    """Train ``config`` on ``data.train`` (clean training); with ``out``, checkpoint every epoch and resume.

    ``model`` trains a model you bring (see :func:`robusthash.models.wrap_model`) instead of building
    ``config.backbone``; its own description replaces the backbone in the checkpoint.
    """
    config.validate()
    device = torch.device(device)
    generator = seed_everything(config.seed)
    model = (build_model(config, data) if model is None else model).to(device)
    loss_fn = create_loss(config.loss, model.bits, data.num_classes, len(data.train), **config.loss_options)
    loss_fn = loss_fn.to(device)
    method = CleanTraining(model, loss_fn, data, device, generator, config=config)
    dataset = dataset_meta(data, dataset_options or {})
    meta = {
        "kind": "trained",
        "model": model.config,
        "train": asdict(config),
        "dataset": dataset,
        "seed": config.seed,
        "environment": environment(device),
    }
    plan = TrainingPlan(
        config.epochs,
        config.batch_size,
        meta,
        Path(out) if out else None,
        device,
        resume,
        quiet,
        f"train {config.loss}-{config.bits}",
        config.precision,
    )
    history, seconds = run_training(model, method, data, plan)
    return TrainResult(model, loss_fn, history, Path(out) if out else None, seconds)


__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingMethod",
    "TrainingPlan",
    "CleanTraining",
    "run_training",
    "train",
    "build_model",
    "dataset_meta",
]
