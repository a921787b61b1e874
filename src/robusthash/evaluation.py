"""Encoding splits and measuring clean retrieval."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from robusthash import metrics
from robusthash.data import DatasetSplits, iterate_batches, labels_of
from robusthash.distributed import gather_strided, strided
from robusthash.errors import UserError
from robusthash.runtime import autocast, eval_mode

SATURATED = 9.0  # |h| beyond which float32's tanh(h) is exactly +-1


def probe_images(split: Dataset, count: int = 128) -> Tensor:
    """Up to ``count`` images spread evenly over ``split`` (a list sorted by class still gives every class): the
    probe of :func:`check_model`."""
    if len(split) == 0:
        return torch.zeros(0)
    picks = torch.linspace(0, len(split) - 1, min(count, len(split))).round().long().unique()
    return torch.cat([x for x, _, _ in iterate_batches(split, 500, indices=picks)])


@torch.no_grad()
def check_model(
    model: torch.nn.Module, images: Tensor, device: torch.device | str = "cpu", allow_saturated: bool = False
) -> None:
    """Refuse a model whose outputs cannot be scored, before any attack or metric runs on it.

    On ``images`` (a probe, e.g. the queries): logits that are NaN or infinite, one code for every image (a
    constant model retrieves by chance), or, unless ``allow_saturated``, every logit beyond |h| = 9, where
    tanh is exactly +-1 in float32 and no gradient reaches the input (say so with the flag for a model that
    really saturates: attacks then use their surrogate derivatives). Each is a :class:`UserError` naming what was
    found.
    """
    if len(images) == 0 or images.ndim != 4:
        return
    with eval_mode(model):
        h = model.preactivation(images.to(device)).float().cpu()
    bad = ~torch.isfinite(h).all(1)
    if bad.any():
        raise UserError(
            f"the model returned NaN or infinite logits for {int(bad.sum())} of {len(h)} probe images: "
            "it is refused, not scored"
        )
    if len(h) > 1 and (torch.sign(h) == torch.sign(h[:1])).all():
        raise UserError(
            f"the model gives all {len(h)} probe images the same code: a constant model cannot be "
            "scored (check its weights and its input normalisation)"
        )
    if not allow_saturated and (h.abs() > SATURATED).all():
        raise UserError(
            f"every logit of the model is beyond |h| = {SATURATED:g} on all {len(h)} probe images "
            "(tanh saturates: no gradient reaches the input); pass --allow-saturated "
            "(allow_saturated=True) to attack it with surrogate gradients anyway"
        )


# images per model call when encoding: on the CPU small batches keep the activations in cache (fashion-mosaic's
# 56 px images encode 1.9x faster at 32 than at 500: benchmarks/bench_encode.py); on a GPU large ones fill it
CPU_ENCODE_BATCH, GPU_ENCODE_BATCH = 32, 500


def encode_batch(device: torch.device | str) -> int:
    """The encoding batch size for ``device``."""
    return CPU_ENCODE_BATCH if torch.device(device).type == "cpu" else GPU_ENCODE_BATCH


@torch.no_grad()
def encode(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    quiet: bool = True,
    desc: str = "encode",
    precision: str = "fp32",
    indices: Tensor | None = None,
) -> Tensor:
    """Binary codes {-1, +1} (N, K) of a whole split (or of its items ``indices``, in that order), computed in
    eval mode (the model's mode is restored); ``precision="bf16"`` runs the model under bf16 autocast
    (:func:`~robusthash.runtime.autocast`); ``batch_size`` defaults to :func:`encode_batch`."""
    chunks = []
    batch_size = batch_size or encode_batch(device)
    count = len(dataset) if indices is None else len(indices)
    batches = iterate_batches(dataset, batch_size, indices=indices)
    with eval_mode(model), autocast(device, precision):
        for x, _, _ in tqdm(batches, total=-(-count // batch_size), desc=desc, disable=quiet, leave=False):
            chunks.append(model.encode(x.to(device)).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.bits)


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    images: Tensor,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    precision: str = "fp32",
) -> Tensor:
    """Binary codes of an image tensor (N, C, H, W), computed in batches on ``device`` (of :func:`encode_batch`
    images unless ``batch_size``), returned on the CPU."""
    batch_size = batch_size or encode_batch(device)
    with eval_mode(model), autocast(device, precision):
        chunks = [
            model.encode(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(chunks) if chunks else torch.zeros(0, model.bits)


def encode_split(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    quiet: bool = True,
    desc: str = "encode",
    precision: str = "fp32",
) -> Tensor:
    """:func:`encode` of a whole split; under torchrun each rank encodes a strided share and every rank gets
    all the codes (:func:`~robusthash.distributed.gather_strided`)."""
    mine = strided(torch.arange(len(dataset)))
    codes = encode(model, dataset, device, quiet=quiet, desc=desc, precision=precision, indices=mine)
    return gather_strided(codes, len(dataset))


def evaluate_retrieval(
    model: torch.nn.Module,
    data: DatasetSplits,
    device: torch.device | str = "cpu",
    topk: int | None = 1000,
    quiet: bool = True,
    per_query: bool = False,
) -> dict[str, Any]:
    """Clean mAP@topk, PR and P@N of the query split against the database split (and per-query AP); a model
    with non-finite or constant outputs is refused (:func:`check_model`; saturation is no problem here)."""
    check_model(
        model,
        torch.cat([probe_images(data.query), probe_images(data.database)]),
        device,
        allow_saturated=True,
    )
    db_codes = encode_split(model, data.database, device, quiet=quiet, desc="encode database")
    q_codes = encode_split(model, data.query, device, quiet=quiet, desc="encode queries")
    report = metrics.retrieval_report(
        q_codes, db_codes, labels_of(data.query), labels_of(data.database), topk
    )
    if not per_query:
        report.pop("ap")
    return report
