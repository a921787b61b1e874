"""PyTorch's own ``torch.distributed`` for robusthash: the process group, query shards and gathers.

``torchrun --nproc-per-node N robusthash ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`process_group` then joins the group (NCCL on CUDA, gloo on the CPU) and puts each rank on
``cuda:LOCAL_RANK``. Without torchrun nothing changes: one process, world size 1, and every helper here is the
identity. Work is split **strided** (rank r takes items r, r + N, r + 2N, ...: no padding, each item exactly
once) and gathered back into the original order, so with per-query randomness a sharded result is the
single-process result.

Gathers of Python objects (:func:`all_gather_objects`) pickle *within the running job*, between processes that
run this same code; nothing read from a file is ever unpickled.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from robusthash.errors import UserError
from robusthash.runtime import resolve_device


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world() -> World:
    """The running job's :class:`World` (one process when no group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def process_group(
    device: str | torch.device | None = "auto", timeout_s: float = 1800
) -> Iterator[torch.device]:
    """Join the torchrun job (if launched by torchrun) and yield this rank's device; leave the group after.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` and the backend is NCCL; on the CPU it is gloo.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield resolve_device(device)
        return
    wanted = resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if wanted.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): use "
                "--nproc-per-node <= the GPUs of a node"
            )
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)
    backend = "nccl" if wanted.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield wanted
        dist.barrier()  # leave together: a gloo rank can abort when its peer tears the connections down first
    finally:
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def strided(items: Tensor, w: World | None = None) -> Tensor:
    """This rank's share of ``items`` (rank r: items r, r + N, ...)."""
    w = w or world()
    return items[w.rank :: w.world_size]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not world().distributed:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def all_gather_tensor(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor``, stacked along a new first axis. Shapes may differ in the first dimension (they
    are padded for the transfer, as gloo needs equal sizes, and trimmed after); results are on the CPU."""
    w = world()
    if not w.distributed:
        return tensor[None].cpu()
    comm = _comm_device()
    sizes = torch.tensor([tensor.shape[0] if tensor.dim() else 1], device=comm)
    all_sizes = [torch.zeros_like(sizes) for _ in range(w.world_size)]
    dist.all_gather(all_sizes, sizes)
    longest = int(max(s.item() for s in all_sizes))
    if any(int(s.item()) != longest for s in all_sizes):
        raise ValueError(
            "all_gather_tensor stacks equal shapes; use gather_strided for shards of unequal length"
        )
    parts = [torch.empty_like(tensor, device=comm) for _ in range(w.world_size)]
    dist.all_gather(parts, tensor.to(comm).contiguous())
    return torch.stack([p.cpu() for p in parts])


def gather_strided(part: Tensor, total: int) -> Tensor:
    """Undo :func:`strided`: each rank's rows (rank r holds rows r, r + N, ...) back into one (total, ...)
    tensor on every rank (on the CPU). Shards differ in length by at most one row: they are padded to the
    longest for the transfer and trimmed."""
    w = world()
    if not w.distributed:
        return part.cpu()
    longest = -(-total // w.world_size)
    padded = torch.zeros((longest, *part.shape[1:]), dtype=part.dtype)
    padded[: len(part)] = part.cpu()
    stacked = all_gather_tensor(padded)
    out = torch.empty((total, *part.shape[1:]), dtype=part.dtype)
    for r in range(w.world_size):
        rows = len(range(r, total, w.world_size))
        out[r :: w.world_size] = stacked[r, :rows]
    return out


def all_gather_rows(indices: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's ``(indices, values)`` rows, concatenated in rank order (on the tensors' device). Batches may
    differ in size: they are padded to the largest for the transfer (gloo needs equal sizes) and trimmed."""
    w = world()
    if not w.distributed:
        return indices, values
    size = torch.tensor([indices.numel()], device=indices.device)
    sizes = [torch.zeros_like(size) for _ in range(w.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    pad_idx = torch.zeros(longest, dtype=indices.dtype, device=indices.device)
    pad_val = torch.zeros(longest, *values.shape[1:], dtype=values.dtype, device=values.device)
    pad_idx[: indices.numel()] = indices
    pad_val[: indices.numel()] = values
    all_idx = [torch.zeros_like(pad_idx) for _ in range(w.world_size)]
    all_val = [torch.zeros_like(pad_val) for _ in range(w.world_size)]
    dist.all_gather(all_idx, pad_idx)
    dist.all_gather(all_val, pad_val)
    idx = torch.cat([a[: int(s.item())] for a, s in zip(all_idx, sizes, strict=True)])
    val = torch.cat([a[: int(s.item())] for a, s in zip(all_val, sizes, strict=True)])
    return idx, val


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` for this rank's device:
    gradients are averaged over the ranks during ``backward``; buffers (batch-norm statistics) follow rank 0."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def average_gradients(module: torch.nn.Module) -> None:
    """Average ``module``'s gradients over the ranks (for a network trained beside the DDP-wrapped model)."""
    w = world()
    if not w.distributed:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(w.world_size)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank: in training each rank updates its own
    copy in every forward pass, so after the last step they differ until synchronised."""
    if not world().distributed:
        return
    comm = _comm_device()
    for buffer in module.buffers():
        copy = buffer.detach().to(comm)
        dist.broadcast(copy, src=0)
        buffer.data.copy_(copy)


def epoch_indices(length: int, seed: int, epoch: int, w: World | None = None) -> Tensor:
    """This rank's shuffled training items of ``epoch``: :class:`~torch.utils.data.DistributedSampler` (one
    permutation of ``seed`` and ``epoch`` on every rank, padded to a multiple of the world size, strided)."""
    from torch.utils.data import DistributedSampler

    w = w or world()
    sampler = DistributedSampler(
        range(length), num_replicas=w.world_size, rank=w.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


class TorchCollective:
    """The :class:`~robusthash.metrics.Collective` of the running process group (numpy in and out)."""

    def __init__(self) -> None:
        w = world()
        self.rank, self.world_size = w.rank, w.world_size

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        return all_gather_tensor(torch.from_numpy(np.ascontiguousarray(array))).numpy()
