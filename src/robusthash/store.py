"""Code stores: a database's codes and labels bit-packed in memory-mapped files, encoded in chunks with resume.

A store is a folder:

- ``codes.npy``: (N, ceil(K / 64)) uint64, bit k of row i set when bit k of code i is +1
  (:func:`~robusthash.metrics.pack_bits`): 8 bytes per item at 64 bits, 10 million codes in 80 MB;
- ``labels.npy``: (N, ceil(C / 64)) uint64, the packed multi-hot labels;
- ``done.npy``: one byte per chunk of ``chunk`` items, set once the chunk's rows are written and flushed;
- ``store.json``: bits, classes, count, chunk and the fingerprint of the model that encoded it, written last
  (atomically): a folder without it is not a store.

:func:`encode_to_store` fills a store chunk by chunk with a progress bar; a killed run resumes at the first
chunk not done, and under torchrun rank r encodes chunks r, r + N, ... :meth:`CodeStore.report` computes mAP@K,
PR and P@N by streaming over the memory-mapped database (:mod:`robusthash.metrics.streaming`), each rank over
a contiguous shard. Files are read with ``allow_pickle=False``: a store is data, never code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from robusthash import metrics
from robusthash.data import labels_of
from robusthash.distributed import TorchCollective, barrier, world
from robusthash.errors import UserError
from robusthash.evaluation import encode
from robusthash.runtime import atomic_write_json, is_main_process, model_fingerprint

FORMAT = "robusthash-code-store/1"
DEFAULT_CHUNK = 65536


@dataclass(frozen=True)
class CodeStore:
    """An opened store (see module docstring); arrays are memory-mapped on access."""

    path: Path
    bits: int
    classes: int
    count: int
    chunk: int
    fingerprint: str

    @property
    def chunks(self) -> int:
        return -(-self.count // self.chunk)

    @classmethod
    def open(cls, path: str | Path) -> CodeStore:
        path = Path(path)
        meta_path = path / "store.json"
        if not meta_path.is_file():
            raise UserError(
                f"{path} is not a code store (no store.json); 'robusthash evaluate --store' makes one"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            store = cls(
                path,
                int(meta["bits"]),
                int(meta["classes"]),
                int(meta["count"]),
                int(meta["chunk"]),
                str(meta["fingerprint"]),
            )
            if min(store.bits, store.classes, store.chunk) < 1 or store.count < 0:
                raise ValueError(f"bits, classes and chunk must be >= 1 and count >= 0, got {meta}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{meta_path} is not a {FORMAT} description ({exc})") from None
        expected = {
            "codes": (np.uint64, (store.count, -(-store.bits // 64))),
            "labels": (np.uint64, (store.count, -(-store.classes // 64))),
            "done": (np.uint8, (store.chunks,)),
        }
        for name, (dtype, shape) in expected.items():
            array = store._array(name)
            if array.dtype != dtype or array.shape != shape:
                raise UserError(
                    f"{path / (name + '.npy')} holds {array.dtype} {array.shape}, expected "
                    f"{np.dtype(dtype)} {shape}; the store is damaged: delete the folder and re-encode"
                )
        return store

    def _array(self, name: str, mode: str = "r") -> np.ndarray:
        try:
            return np.load(self.path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {self.path / (name + '.npy')}: {exc}") from None

    def codes(self) -> np.ndarray:
        return self._array("codes")

    def labels(self) -> np.ndarray:
        return self._array("labels")

    def done(self) -> np.ndarray:
        return self._array("done")

    @property
    def complete(self) -> bool:
        return bool(self.done().all())

    def shard(self) -> slice:
        """This rank's contiguous rows (all of them in one process)."""
        w = world()
        return slice(w.rank * self.count // w.world_size, (w.rank + 1) * self.count // w.world_size)

    def report(
        self,
        query_codes: torch.Tensor,
        query_labels: torch.Tensor,
        topk: int | None,
        ns: Sequence[int] = metrics.DEFAULT_NS,
        chunk: int = DEFAULT_CHUNK,
        quiet: bool = True,
    ) -> dict[str, Any]:
        """mAP@topk, per-query AP, PR and P@N of {-1, +1} query codes against the stored database, streamed;
        under torchrun every rank scans its shard and every rank gets the whole result."""
        if not self.complete:
            raise UserError(
                f"the code store {self.path} is incomplete ({int(self.done().sum())} of {self.chunks} "
                "chunks): rerun the encoding, which resumes"
            )
        if query_codes.shape[1] != self.bits:
            raise UserError(f"queries have {query_codes.shape[1]} bits, the store {self.bits}")
        part = self.shard()
        bar = tqdm(
            total=2 * (part.stop - part.start),
            desc="stream metrics",
            unit="item",
            unit_scale=True,
            disable=quiet,
            leave=False,
        )
        q = metrics.pack_bits(query_codes.cpu().numpy() == 1)
        ql = metrics.pack_bits(query_labels.cpu().numpy() == 1)
        report = metrics.streaming_report(
            q,
            ql,
            self.codes()[part],
            self.labels()[part],
            self.bits,
            topk,
            ns,
            chunk=chunk,
            collective=TorchCollective(),
            progress=bar,
        )
        bar.close()
        return report


def _create(path: Path, bits: int, classes: int, count: int, chunk: int, fingerprint: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, shape, dtype in (
        ("codes", (count, -(-bits // 64)), np.uint64),
        ("labels", (count, -(-classes // 64)), np.uint64),
        ("done", (-(-count // chunk),), np.uint8),
    ):
        tmp = path / f".{name}.npy.tmp"
        np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape).flush()  # zero-filled, sparse
        tmp.replace(path / f"{name}.npy")
    meta = {
        "format": FORMAT,
        "bits": bits,
        "classes": classes,
        "count": count,
        "chunk": chunk,
        "fingerprint": fingerprint,
    }
    atomic_write_json(meta, path / "store.json")


def encode_to_store(
    model: torch.nn.Module,
    dataset: Dataset,
    path: str | Path,
    device: torch.device | str = "cpu",
    chunk: int = DEFAULT_CHUNK,
    batch_size: int = 500,
    quiet: bool = True,
    precision: str = "fp32",
) -> CodeStore:
    """Encode ``dataset`` with ``model`` into the store at ``path`` (see module docstring) and return it.

    An existing store of the same model (fingerprint), size and chunking resumes: chunks already done are
    skipped. One of another model or size is refused, naming the difference.
    """
    if chunk < 1:
        raise UserError(f"chunk must be >= 1, got {chunk}")
    path = Path(path)
    labels = labels_of(dataset)
    wanted = {
        "bits": int(model.bits),
        "classes": int(labels.shape[1]),
        "count": len(dataset),
        "chunk": chunk,
        "fingerprint": model_fingerprint(model),
    }
    if is_main_process() and not (path / "store.json").is_file():
        _create(path, **wanted)
    barrier()
    store = CodeStore.open(path)
    stored = {k: v for k, v in asdict(store).items() if k != "path"}
    if stored != wanted:
        differ = ", ".join(k for k in wanted if wanted[k] != stored[k])
        raise UserError(
            f"{path} holds a code store of another model or database ({differ}); choose another "
            "--store folder or delete it"
        )
    w = world()
    codes, packed_labels, done = (
        store._array("codes", "r+"),
        store._array("labels", "r+"),
        store._array("done", "r+"),
    )
    todo = [c for c in range(w.rank, store.chunks, w.world_size) if not done[c]]
    for c in tqdm(todo, desc=f"encode into {path.name}", unit="chunk", disable=quiet):
        rows = torch.arange(c * chunk, min((c + 1) * chunk, store.count))
        block = encode(model, dataset, device, batch_size, precision=precision, indices=rows)
        codes[rows[0] : rows[-1] + 1] = metrics.pack_bits(block.numpy() == 1)
        packed_labels[rows[0] : rows[-1] + 1] = metrics.pack_bits(labels[rows].numpy() == 1)
        codes.flush()
        packed_labels.flush()
        done[c] = 1  # only after the rows are on disk: a killed run redoes this chunk
        done.flush()
    barrier()
    return store
