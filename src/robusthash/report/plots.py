"""Figures: PR curves by Hamming radius and P@N curves, clean against each attack (PgA Figs. 3-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"clean": dict(color="black", linewidth=2.2)}


def _curves(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("clean", results["clean"])] + list(results["attacks"].items())


def plot_pr_and_pn(results: dict[str, Any], caption: str, out_dir: str | Path, stem: str = "") -> list[Path]:
    """Write ``{stem}pr_curve.png`` and ``{stem}p_at_n.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5.6, 4.4), dpi=110)
    for name, r in _curves(results):
        pr = r["pr_curve"]
        ax.plot(pr["recall"], pr["precision"], marker="o", markersize=2.5, label=name, **STYLE.get(name, {}))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision-recall (Hamming radius)")  # fmt: skip
    _finish(fig, ax, caption)
    paths.append(out / f"{stem}pr_curve.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.6, 4.4), dpi=110)
    for name, r in _curves(results):
        pn = r["p_at_n"]
        ax.plot(pn["n"], pn["precision"], marker="o", markersize=3, label=name, **STYLE.get(name, {}))
    ax.set(xlabel="N (top retrieved)", ylabel="precision@N", ylim=(0, 1.02), title="Precision@N")
    _finish(fig, ax, caption)
    paths.append(out / f"{stem}p_at_n.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def _finish(fig: Any, ax: Any, caption: str) -> None:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=6.5, wrap=True, color="#444")
    fig.tight_layout(rect=(0, 0.05, 1, 1))


def plot_efficiency(results: dict[str, Any], caption: str, out: str | Path) -> Path:
    """PgA Fig. 1 for one run: mAP under each attack against seconds per adversarial image."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=110)
    for name, r in results["attacks"].items():
        ax.scatter(r["seconds_per_image"], r["map"], s=45)
        ax.annotate(
            name, (r["seconds_per_image"], r["map"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    ax.axhline(results["clean"]["map"], color="black", linewidth=1, linestyle="--", label="clean")
    times = [r["seconds_per_image"] for r in results["attacks"].values()]
    wide = bool(times) and max(times) > 10 * min(times)
    ax.set(xscale="log" if wide else "linear", ylabel="mAP under attack",
           xlabel="seconds per adversarial image" + (" (log scale)" if wide else ""),
           title="Attack strength against cost (lower left is better)")  # fmt: skip
    _finish(fig, ax, caption)
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
