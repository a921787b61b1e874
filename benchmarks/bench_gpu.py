"""Seconds per adversarial example at the papers' scale, against the bare forward+backward passes: the GPU hot
path (issue 13), fp32 against bf16, and the layout / compile options.

    python benchmarks/bench_gpu.py                       # on a CUDA GPU: AlexNet and VGG11, 224 px, batch 128
    python benchmarks/bench_gpu.py --quick --out /tmp/gpu-quick.json   # a short check; runs on the CPU too

Random-initialised hashing models (32 bits; the time of a pass does not depend on the weights), one batch of
random images, a random reference bank and database of 10,500 codes with 21 labels (NUS-WIDE-sized), every
attack at its default iterations (``--quick``: a few). "bare" is T = 100 forward+backward passes of the model
with nothing else: the floor any T = 100 PGD attack pays. Each repeat times every row once, in turn, so that
ratios compare rows measured side by side; the figures are medians over repeats. One JSON row per measurement
(device name, backbone, precision, variant, attack, steps, batch, seconds per image, ratio to bare).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, Rows

from robusthash.attacks import CodeBank, create_attack
from robusthash.models import create_model
from robusthash.runtime import autocast, cudnn_autotuning, resolve_device, speed_up

COMMAND = "python benchmarks/bench_gpu.py"
KEY = ("device_name", "backbone", "precision", "variant", "attack", "batch", "image_size")
ATTACKS = ("pga", "pga-dagger", "hag", "dhta", "p2p", "sdha")
BANK, LABELS, BITS = 10_500, 21, 32


def bank(generator: torch.Generator, device: torch.device) -> CodeBank:
    codes = torch.randint(0, 2, (BANK, BITS), generator=generator).float() * 2 - 1
    labels = (torch.rand(BANK, LABELS, generator=generator) < 0.15).float()
    labels[torch.arange(BANK), torch.randint(0, LABELS, (BANK,), generator=generator)] = 1  # no empty rows
    return CodeBank(codes.to(device), labels.to(device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_passes(model: torch.nn.Module, x: torch.Tensor, steps: int, precision: str) -> None:
    """``steps`` forward+backward passes w.r.t. the input: the floor of a ``steps``-step PGD attack."""
    x = x.clone().requires_grad_(True)
    with autocast(x.device, precision):
        for _ in range(steps):
            (grad,) = torch.autograd.grad(torch.tanh(model.preactivation(x)).sum(), x)
            x.data.add_(grad.sign(), alpha=1e-6)


def timed(fn: Any, device: torch.device) -> float:
    sync(device)
    began = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - began


def run_setting(
    rows: Rows,
    backbone: str,
    precision: str,
    variant: str,
    args: argparse.Namespace,
    device: torch.device,
    device_name: str,
) -> None:
    """One backbone / precision / variant: its bare passes and attacks, timed in turn. A variant is "plain" or
    options joined by "+": channels_last, compile, autotune (cuDNN autotuning, ``--cudnn-benchmark``)."""
    with cudnn_autotuning("autotune" in variant):
        _time_setting(rows, backbone, precision, variant, args, device, device_name)


def _time_setting(
    rows: Rows,
    backbone: str,
    precision: str,
    variant: str,
    args: argparse.Namespace,
    device: torch.device,
    device_name: str,
) -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model(backbone, BITS, 3, (0.5,) * 3, (0.25,) * 3, args.image_size).to(device).eval()
    speed_up(model, channels_last="channels_last" in variant, compile="compile" in variant)
    for p in model.parameters():
        p.requires_grad_(False)
    images = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.zeros(args.batch, LABELS)
    labels[torch.arange(args.batch), torch.randint(0, LABELS, (args.batch,), generator=generator)] = 1
    reference, database = bank(generator, device), bank(generator, device)
    attacks = ATTACKS if variant == "plain" else ("pga",)
    attacks = tuple(a for a in attacks if a in args.attacks)
    if backbone in args.pga_only:
        attacks = tuple(a for a in attacks if a == "pga")

    def attack_fn(name: str) -> Any:
        steps = args.quick_steps if args.quick else None
        attack = create_attack(
            name,
            model,
            reference=reference,
            database=database,
            seed=0,
            batch_size=args.batch,
            precision=precision,
            **({"steps": steps} if steps else {}),
        )
        return attack, lambda: attack(images, labels)

    built = {name: attack_fn(name) for name in attacks}
    t_bare = args.quick_steps if args.quick else 100
    x_device = images.to(device)
    fns = {"bare": (t_bare, lambda: bare_passes(model, x_device, t_bare, precision))}
    fns.update({name: (attack.steps, fn) for name, (attack, fn) in built.items()})
    for _, fn in fns.values():  # warm-up: kernels, allocator, compilation
        fn() if args.quick else timed(fn, device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, (_, fn) in fns.items():
            times[name].append(timed(fn, device) / args.batch)
    bare = statistics.median(times["bare"])
    for name, (steps, _) in fns.items():
        per_image = statistics.median(times[name])
        # ratio to the bare passes at the same number of steps (an attack of T steps pays T passes at least)
        ratio = (
            statistics.median(t / b for t, b in zip(times[name], times["bare"], strict=True))
            * t_bare
            / max(steps, 1)
        )
        row = {
            "device_name": device_name,
            "backbone": backbone,
            "precision": precision,
            "variant": variant,
            "attack": name,
            "steps": steps,
            "batch": args.batch,
            "image_size": args.image_size,
            "seconds_per_image": per_image,
            "ms_per_image": 1e3 * per_image,
            "ratio_to_bare_same_steps": ratio,
            "bare_ms_per_image_100": 1e3 * bare * 100 / t_bare,
            "repeats": args.repeats,
            "quick": args.quick,
        }
        rows.add(row)
        print(
            f"{backbone:8s} {precision:5s} {variant:14s} {name:10s} T={steps:5d} {1e3 * per_image:9.2f} ms/image "
            f"{ratio:5.2f}x the bare passes of the same T"
        )


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| device | backbone | precision | variant | attack | T | ms / image | x bare passes (same T) |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device_name']} | {r['backbone']} | {r['precision']} | {r['variant']} | {r['attack']} | "
            f"{r['steps']} | {r['ms_per_image']:.2f} | {r['ratio_to_bare_same_steps']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short check: few steps, small batch, one repeat"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbones", default="alexnet,vgg11")
    parser.add_argument("--pga-only", default="vgg11", help="backbones timed with PgA alone (the slow ones)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument(
        "--variants",
        default="plain,channels_last,compile",
        help="plain: every attack; channels_last, compile, autotune (cuDNN), or several "
        "joined by +: PgA with those options",
    )
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--batch", type=int, default=None, help="default 128 (--quick: 4)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--quick-steps", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "gpu.json"))
    parser.add_argument("--markdown", default=None, help="write the table to this Markdown file")
    args = parser.parse_args()
    args.batch = args.batch or (4 if args.quick else 128)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.attacks = args.attacks.split(",")
    args.pga_only = [b for b in args.pga_only.split(",") if b]
    device = resolve_device(args.device)
    threads = torch.get_num_threads()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({threads} threads)"
    rows = Rows(Path(args.out), COMMAND + (" --quick" if args.quick else ""), KEY, device)
    for backbone in args.backbones.split(","):
        for precision in args.precisions.split(","):
            for variant in args.variants.split(","):
                key = {
                    "device_name": device_name,
                    "backbone": backbone,
                    "precision": precision,
                    "variant": variant,
                    "attack": "bare",
                    "batch": args.batch,
                    "image_size": args.image_size,
                }
                if rows.has(**key):
                    continue
                run_setting(rows, backbone, precision, variant, args, device, device_name)
    text = markdown(rows.rows)
    rows.set_markdown(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(f"rows in {args.out}; command: {COMMAND}")


if __name__ == "__main__":
    main()
