"""Markdown tables of results."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


def attack_table(results: dict[str, Any], title: str | None = None) -> str:
    """The attack table: one row per attack, plus clean and the worst-case robust mAP."""
    topk = results["clean"]["topk"]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        f"| attack | steps | mAP@{topk} | t-mAP@{topk} | s / image | bits flipped | L-inf (x255) | L2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| clean | | {fmt(results['clean']['map'])} | | | | | |",
    ]
    for name, r in results["attacks"].items():
        lines.append(
            f"| {name} | {r['settings']['steps']} | {fmt(r['map'])} | {fmt(r.get('tmap'))} | "
            f"{fmt(r['seconds_per_image'], '.4f')} | {fmt(r['bits_flipped'], '.2f')} | "
            f"{fmt(r['linf'] * 255, '.2f')} | {fmt(r['l2'], '.3f')} |"
        )
    if "robust_map" in results:
        lines.append(f"| **robust (worst case per query)** | | **{fmt(results['robust_map'])}** | | | | | |")
    return "\n".join(lines) + "\n"


def markdown_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A plain Markdown table; numbers are printed with 4 decimals."""
    cells = [[fmt(v) if isinstance(v, float) else str(v) for v in row] for row in rows]
    align = align or "|---" + "|---:" * (len(header) - 1) + "|"
    return (
        "\n".join(["| " + " | ".join(header) + " |", align] + ["| " + " | ".join(r) + " |" for r in cells])
        + "\n"
    )
