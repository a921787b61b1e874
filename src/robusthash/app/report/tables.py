"""Markdown tables of results."""

from __future__ import annotations

from typing import Any

import numpy as np

from robusthash.results import CertifyRun, RobustnessRun


def fmt(value: Any, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


ATTACK_HEADER = [
    "attack",
    "threat model",
    "steps",
    "mAP@{k}",
    "t-mAP@{k}",
    "target success",
    "s / image",
    "s / image (with fit)",
    "bits flipped",
    "L-inf (x255)",
    "L2",
]


ALWAYS = {"attack", "threat model", "steps", "mAP@{k}"}  # the columns every attack table shows


def attack_rows(run: RobustnessRun) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the attack table: clean, one row per attack, and the worst-case robust mAP. Columns
    that no attack of the run fills are left out (t-mAP and target success without a targeted attack, the time
    with fit when no attack fits anything). A run of several processes adds the crafting wall clock (its
    seconds per image sum the processes' times)."""
    k = run.clean.topk if run.clean.topk is not None else "all"
    columns = {h: [] for h in ATTACK_HEADER}
    for a in run.attacks:
        counts = a.query_counts()
        steps = a.steps if a.steps is not None else ""
        if counts is not None:
            steps = f"{counts['median']:.0f} queries (budget {a.settings.get('budget')})"
        fitted = fmt(a.seconds_per_image_amortised) != fmt(a.seconds_per_image)  # a fit that shows
        for h, v in zip(
            ATTACK_HEADER,
            [
                a.display_name,
                a.threat_model,
                steps,
                a.map,
                a.tmap,
                fmt(a.success_rate, ".3f"),
                fmt(a.seconds_per_image),
                fmt(a.seconds_per_image_amortised) if fitted else "",
                fmt(a.mean_bits_flipped, ".2f"),
                fmt(a.mean_linf * 255, ".2f"),
                fmt(a.mean_l2, ".3f"),
            ],
            strict=True,
        ):
            columns[h].append(v)
    keep = [h for h in ATTACK_HEADER if h in ALWAYS or any(v not in (None, "") for v in columns[h])]
    sharded = run.world_size > 1
    header = [h.format(k=k) for h in keep] + ([f"wall s ({run.world_size} processes)"] if sharded else [])
    blank = [None] * (len(header) - 4)
    rows: list[list[Any]] = [["clean", "", "", run.clean.map, *blank]]
    for i, a in enumerate(run.attacks):
        rows.append([columns[h][i] for h in keep] + ([fmt(a.wall_seconds, ".1f")] if sharded else []))
    if run.attacks:
        budgets = [a.settings.get("square_budget") for a in run.attacks if a.settings.get("square_budget")]
        label = "robust (worst case per query" + (
            f"; gradient-free stage {budgets[0]:,} queries" if budgets else ""
        )
        rows.append([label + ")", "", "", run.robust_map, *blank])
    return header, rows


def budget_rows(run: RobustnessRun) -> tuple[list[str], list[list[Any]]] | None:
    """Header and rows of the query attacks' mAP at each budget, with the images they sent (None without any)."""
    queried = [a for a in run.attacks if a.budget_map]
    if not queried:
        return None
    budgets = sorted({int(b) for a in queried for b in a.budget_map or {}})
    k = run.clean.topk if run.clean.topk is not None else "all"
    header = ["attack"] + [f"mAP@{k} at {b:,} queries" for b in budgets] + ["queries: mean", "median", "max"]
    rows = []
    for a in queried:
        counts = a.query_counts() or {}
        rows.append(
            [a.display_name]
            + [(a.budget_map or {}).get(str(b)) for b in budgets]
            + [
                fmt(counts.get("mean"), ".0f"),
                fmt(counts.get("median"), ".0f"),
                fmt(counts.get("max"), ".0f"),
            ]
        )
    return header, rows


def flag_rows(run: RobustnessRun) -> tuple[list[str], list[list[Any]]] | None:
    """Header and rows of the checks for masked gradients (None when the run has none)."""
    if not run.flags:
        return None
    if not any(f.fired for f in run.flags):
        return ["", "check", "measured"], [["ok", f.name, f.measured] for f in run.flags]
    rows = [
        ["FLAG" if f.fired else "ok", f.name, f.measured, f"{f.meaning}; {f.advice}" if f.fired else ""]
        for f in run.flags
    ]
    return ["", "check", "measured", "what it means and what to do"], rows


def attack_table(run: RobustnessRun, title: str | None = None) -> str:
    """The attack table, then the query attacks' budget table and the checks for masked gradients."""
    header, rows = attack_rows(run)
    text = (f"### {title}\n\n" if title else "") + markdown_table(header, rows)
    budgets = budget_rows(run)
    if budgets:
        text += "\nQuery attacks (they see only the service's answers):\n\n" + markdown_table(*budgets)
    flags = flag_rows(run)
    if flags:
        fired = sum(f.fired for f in run.flags)
        text += (
            f"\nChecks for masked gradients: {fired} of {len(run.flags)} fired"
            + (" (the robust mAP is then an optimistic upper bound)" if fired else "")
            + "\n\n"
            + markdown_table(*flags, align="|---" * len(flags[0]) + "|")
        )
    return text


def markdown_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A plain Markdown table; numbers are printed with 4 decimals."""
    cells = [[fmt(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in row] for row in rows]
    align = align or "|---" + "|---:" * (len(header) - 1) + "|"
    return (
        "\n".join(["| " + " | ".join(header) + " |", align] + ["| " + " | ".join(r) + " |" for r in cells])
        + "\n"
    )


def certify_rows(run: CertifyRun) -> tuple[list[str], list[list[Any]]]:
    """Per certified L2 radius: the certified mAP (a lower bound), the empirical mAP under the attacks run (an
    upper bound), the share of queries certified and the median Hamming radius the bound rests on."""
    header = [
        "L2 radius",
        "certified mAP (lower bound)",
        "empirical mAP (upper bound)",
        "certified queries",
        "median Hamming r",
    ]
    rows = []
    for k, radius in enumerate(run.radii):
        known = [r for r in run.hamming[k] if r is not None]
        rows.append(
            [
                f"{radius:g}",
                run.certified_map[k],
                run.empirical_map[k],
                f"{len(known)}/{len(run.query_indices)}",
                fmt(float(np.median(known)), ".0f") if known else "",
            ]
        )
    return header, rows


def certify_table(run: CertifyRun) -> str:
    """The certificate table, with the base and smoothed clean mAP above it."""
    base = float(np.mean(run.clean_ap)) if run.clean_ap else 0.0
    smoothed = float(np.mean(run.smoothed_ap)) if run.smoothed_ap else 0.0
    attacks = ", ".join(run.empirical_ap) or "none"
    head = (
        f"Center smoothing, sigma {run.sigma:g}, {len(run.query_indices)} queries (mAP over the whole "
        f"database): base model {base:.4f}, smoothed {smoothed:.4f}; abstained {run.abstain_rate:.0%}; "
        f"empirical side: L2 {attacks} on the base model, scored by the smoothed model\n\n"
    )
    return head + markdown_table(*certify_rows(run))
