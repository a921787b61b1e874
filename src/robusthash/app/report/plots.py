"""Figures: PR curves by Hamming radius and P@N curves, clean against each attack (PgA Figs. 3-4), and attack
strength against cost (PgA Fig. 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robusthash.results import RobustnessRun, Scores  # noqa: E402

STYLE = {"clean": dict(color="black", linewidth=2.2)}


def _curves(run: RobustnessRun) -> list[tuple[str, Scores]]:
    return [("clean", run.clean)] + [(a.display_name, a.scores) for a in run.attacks]


def plot_pr_and_pn(run: RobustnessRun, caption: str, out_dir: str | Path, stem: str = "") -> list[Path]:
    """Write ``{stem}pr_curve.png`` and ``{stem}p_at_n.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, x_key, y_key, labels in (
        (
            "pr_curve",
            "recall",
            "precision",
            dict(
                xlabel="recall",
                ylabel="precision",
                xlim=(0, 1),
                ylim=(0, 1.02),
                title="Precision-recall (Hamming radius)",
            ),
        ),
        (
            "p_at_n",
            "n",
            "precision",
            dict(xlabel="N (top retrieved)", ylabel="precision@N", ylim=(0, 1.02), title="Precision@N"),
        ),
    ):
        fig, ax = plt.subplots(figsize=(5.6, 4.4), dpi=110)
        for name, scores in _curves(run):
            curve = getattr(scores, kind)
            if curve:
                ax.plot(
                    curve[x_key], curve[y_key], marker="o", markersize=2.5, label=name, **STYLE.get(name, {})
                )
        ax.set(**labels)
        _finish(fig, ax, caption)
        paths.append(out / f"{stem}{kind}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def _finish(fig: Any, ax: Any, caption: str) -> None:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=6.5, wrap=True, color="#444")
    fig.tight_layout(rect=(0, 0.05, 1, 1))


def plot_efficiency(run: RobustnessRun, caption: str, out: str | Path) -> Path:
    """PgA Fig. 1 for one run: mAP under each attack against seconds per adversarial image (fit included)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=110)
    for a in run.attacks:
        ax.scatter(a.seconds_per_image_amortised, a.map, s=45)
        ax.annotate(
            a.display_name,
            (a.seconds_per_image_amortised, a.map),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.axhline(run.clean.map, color="black", linewidth=1, linestyle="--", label="clean")
    times = [a.seconds_per_image_amortised for a in run.attacks if a.seconds_per_image_amortised > 0]
    wide = bool(times) and max(times) > 10 * min(times)
    ax.set(
        xscale="log" if wide else "linear",
        ylabel="mAP under attack",
        xlabel="seconds per adversarial image" + (" (log scale)" if wide else ""),
        title="Attack strength against cost (lower left is better)",
    )
    _finish(fig, ax, caption)
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_budget_curve(run: RobustnessRun, caption: str, out: str | Path) -> Path:
    """The query attacks' mAP against the images they had sent per query (log scale), with the clean mAP and
    the white-box robust mAP for reference."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=110)
    for a in run.attacks:
        if a.budget_map:
            points = sorted((int(b), v) for b, v in a.budget_map.items())
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=a.display_name)
    ax.axhline(run.clean.map, color="black", linewidth=1, linestyle="--", label="clean")
    ax.axhline(run.robust_map, color="grey", linewidth=1, linestyle=":", label="robust (all attacks)")
    ax.set(
        xscale="log",
        xlabel="queries sent per image (log scale)",
        ylabel="mAP under attack",
        title="Query attacks: mAP against query budget",
    )
    _finish(fig, ax, caption)
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
