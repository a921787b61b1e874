"""Markdown tables of results."""

from __future__ import annotations

from typing import Any

from robusthash.results import RobustnessRun


def fmt(value: Any, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


ATTACK_HEADER = ["attack", "threat model", "steps", "mAP@{k}", "t-mAP@{k}", "target success", "s / image",
                 "s / image (with fit)", "bits flipped", "L-inf (x255)", "L2"]  # fmt: skip


def attack_rows(run: RobustnessRun) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the attack table: clean, one row per attack, and the worst-case robust mAP. A run of
    several processes adds the crafting wall clock (its seconds per image sum the processes' times)."""
    k = run.clean.topk if run.clean.topk is not None else "all"
    sharded = run.world_size > 1
    header = [h.format(k=k) for h in ATTACK_HEADER] + ([f"wall s ({run.world_size} processes)"] if sharded else [])
    blank = [None] * (len(header) - 4)
    rows: list[list[Any]] = [["clean", "", "", run.clean.map, *blank]]
    for a in run.attacks:
        steps = a.steps if a.steps is not None else ""
        rows.append([a.display_name, a.threat_model, steps, a.map, a.tmap, fmt(a.success_rate, ".3f"),
                     fmt(a.seconds_per_image), fmt(a.seconds_per_image_amortised), fmt(a.mean_bits_flipped, ".2f"),
                     fmt(a.mean_linf * 255, ".2f"), fmt(a.mean_l2, ".3f")]
                    + ([fmt(a.wall_seconds, ".1f")] if sharded else []))  # fmt: skip
    if run.attacks:
        rows.append(["robust (worst case per query)", "", "", run.robust_map, *blank])
    return header, rows


def attack_table(run: RobustnessRun, title: str | None = None) -> str:
    header, rows = attack_rows(run)
    return (f"### {title}\n\n" if title else "") + markdown_table(header, rows)


def markdown_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A plain Markdown table; numbers are printed with 4 decimals."""
    cells = [[fmt(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in row] for row in rows]
    align = align or "|---" + "|---:" * (len(header) - 1) + "|"
    return (
        "\n".join(["| " + " | ".join(header) + " |", align] + ["| " + " | ".join(r) + " |" for r in cells])
        + "\n"
    )
