"""Seeds, devices, environment facts and atomic writes: what every entry point needs to be reproducible."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robusthash.errors import UserError

MAX_SEED = 2**63 - 1


def check_seed(seed: int, what: str = "seed") -> None:
    """Raise :class:`UserError` unless ``seed`` is an integer in [0, 2^63 - 1] (torch's range)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{what} must be an integer in [0, 2^63 - 1], got {seed!r}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator seeded with ``seed``.

    Library code draws its randomness from explicit generators derived from the seed; the global seeds only
    cover third-party code (e.g. dropout inside a torchvision backbone).
    """
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    """Raise :class:`UserError` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager[Any]:
    """The compute precision of a model's forward and backward passes.

    ``fp32``: nothing changes. ``bf16``: :func:`torch.autocast` with bfloat16 on ``device`` (CUDA or CPU):
    convolutions and matrix products run in bf16, reductions and the loss stay in fp32. Hashing models return
    their logits in fp32 either way (``HashModel.preactivation``), so codes, losses and metrics are computed
    exactly from (bf16-rounded) logits.
    """
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def speed_up(model: torch.nn.Module, channels_last: bool = False, compile: bool = False) -> torch.nn.Module:
    r"""Layout and compilation options of a model's forward pass (the model is changed in place and returned).

    ``channels_last`` stores the weights in NHWC order (convolutions then run in that layout); ``compile``
    replaces ``model.preactivation`` by its :func:`torch.compile`\ d version (a one-off compile time, then
    faster steps: for long attacks). Neither changes results beyond floating-point reordering.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile and hasattr(model, "preactivation"):
        model.preactivation = torch.compile(model.preactivation)
    return model


@contextlib.contextmanager
def cudnn_autotuning(enabled: bool) -> Iterator[None]:
    """cuDNN autotuning of the convolution kernels (``torch.backends.cudnn.benchmark``) while the block runs, then
    the previous setting; it never turns autotuning off. No effect on the CPU.

    Opt-in because each new input shape is timed and the fastest kernel kept, so floats can differ between runs of
    the same seed. What it gains on a GPU: docs/choices.md, "cuDNN autotuning".
    """
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode; every module's own mode restored on exit (``model.train(flag)`` would set a
    shared inner model's mode from its wrapper's)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def model_fingerprint(model: torch.nn.Module) -> str:
    """A content hash of a model's weights (identifies a model whatever its file is called)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (None where there is none)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def idle_cores(interval: float = 0.2) -> int:
    """CPU cores this process may use (its affinity) that other work does not keep busy now, at least 1: the
    machine's CPU use over ``interval`` seconds (/proc/stat; the 1-minute load average where there is none,
    which lags: it still counts work that has just ended)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    first = _cpu_jiffies()
    if first is None:
        return max(1, cores - round(os.getloadavg()[0]))
    mine = sum(os.times()[:2])
    time.sleep(interval)
    last = _cpu_jiffies()
    assert last is not None
    share = (last[0] - first[0]) / max(last[1] - first[1], 1)  # of every core of the machine
    others = share * (os.cpu_count() or cores) - (sum(os.times()[:2]) - mine) / interval
    return max(1, cores - round(max(others, 0.0)))


def set_threads(threads: int | str | None) -> int:
    """Set torch's CPU threads: a count, or ``auto``/``None``: :func:`idle_cores` (on a busy machine torch's
    threads contend with the other work and more threads than idle cores run slower than one: docs/threads.md).
    Returns the count set."""
    if threads in (None, "auto"):
        count = idle_cores()
    elif isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
        count = threads
    else:
        raise UserError(f"threads must be a positive integer or 'auto', got {threads!r}")
    torch.set_num_threads(count)
    return count


@contextlib.contextmanager
def threads_set(threads: int | str | None) -> Iterator[int]:
    """:func:`set_threads` for the duration of a ``with`` block; the earlier count restored after it."""
    before = torch.get_num_threads()
    try:
        yield set_threads(threads)
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when available, else CPU; anything else must be a valid torch device."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device {name!r} is not supported; valid: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return device


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions and device description that every results file carries."""
    import torchvision

    import robusthash

    info: dict[str, Any] = {
        "robusthash": robusthash.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device is not None:
        device = torch.device(device)
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
            info["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        else:
            info["device_name"] = cpu_model()
    return info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; AMD and Intel machines time differently), else the
    architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of a ``torch.distributed`` job: those compute, rank 0 writes."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename; the file gets the user's umask (as a
    plain ``open`` would), not ``mkstemp``'s 0600. A failed write (disk full, read-only file system) is one
    :class:`UserError`; the temporary file is removed and what was there before is kept. In a distributed job
    only rank 0 writes (:func:`is_main_process`); the other ranks' writes are skipped."""
    if not is_main_process():
        return
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise UserError(f"cannot write {path}: {reason}") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def safe_load(
    path: str | Path, what: str, map_location: str | torch.device = "cpu", kind: type | None = dict
) -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors and plain values; never code): the one way robusthash
    reads a ``.pt`` file. A missing file, an unreadable one or one holding objects outside torch's allow-list, or
    (with ``kind``) a payload of another type is a :class:`UserError` naming the file as ``what``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        why = (
            "it holds objects robusthash will not load"
            if "weights_only" in str(exc)
            else "corrupt or another format"
        )
        raise UserError(f"{path} is not a readable {what} ({why})") from None
    if kind is not None and not isinstance(payload, kind):
        raise UserError(f"{path} holds a {type(payload).__name__}, not a {what}")
    return payload


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file.
    Serialised in memory first, so that the archive's inner folder name does not come from the temporary file's
    name: the same object gives the same bytes (and SHA-256) on every save."""

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        tmp.write_bytes(buffer.getvalue())

    _atomic_write(Path(path), write)


def atomic_write_text(text: str, path: str | Path) -> None:
    _atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


@contextlib.contextmanager
def exclusive_output(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on output ``path`` for the run's duration (``fcntl.flock`` on ``.{name}.lock``
    beside it, released on exit and by the kernel when the process dies, so a lock is never stale).

    A second writer of the same output gets a :class:`UserError`. Once the lock is held, temporary files that
    a killed run left beside the output (``.{name}.*.tmp``) are removed. In a distributed job rank 0 alone
    locks (it alone writes).
    """
    path = Path(path)
    if not is_main_process():
        yield path
        return
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the duration of the context
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another robusthash run is writing {path}; wait for it to finish or choose another --out"
            ) from None
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        yield path
    finally:
        handle.close()


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Raise :class:`UserError` before any work when ``path`` (a file, or a folder if ``folder``) cannot be
    written: a parent that is a file, a file where a folder is needed or the reverse, no write permission."""
    path = Path(path)
    parent = path if folder else path.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UserError(f"cannot write {path}: {ancestor} is a file, not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise UserError(f"cannot write {path}: no permission to write in {ancestor}")
            break
    if not folder and path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"cannot write into {path}: it is a file; give a folder")
