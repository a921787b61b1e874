"""Figures: PR curves by Hamming radius and P@N curves, clean against each attack (PgA Figs. 3-4), and attack
strength against cost (PgA Fig. 1). Each curve has its own colour, marker and line style; captions are the
page's (under each figure), not drawn into the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robusthash.results import CertifyRun, RobustnessRun, Scores  # noqa: E402

STYLE = {"clean": dict(color="black", linewidth=2.4, marker="o", linestyle="-")}
MARKERS = ["s", "^", "D", "v", "P", "X", "*", "<", ">", "h"]
LINES = ["--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10})


def style_of(i: int, name: str) -> dict[str, Any]:
    """The ``i``-th attack's curve style (clean: black and solid), so curves stay apart in grey print too."""
    if name in STYLE:
        return STYLE[name]
    return dict(color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], linestyle=LINES[i % len(LINES)])


def _curves(run: RobustnessRun) -> list[tuple[str, Scores]]:
    return [("clean", run.clean)] + [(a.display_name, a.scores) for a in run.attacks]


def plot_pr_and_pn(run: RobustnessRun, subject: str, out_dir: str | Path, stem: str = "") -> list[Path]:
    """Write ``{stem}pr_curve.png`` and ``{stem}p_at_n.png`` into ``out_dir`` (titled with ``subject``, e.g.
    "CgAT model"); return their paths."""
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
        fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=110)
        for i, (name, scores) in enumerate(_curves(run)):
            curve = getattr(scores, kind)
            if curve:
                ax.plot(curve[x_key], curve[y_key], markersize=4, label=name, **style_of(i - 1, name))
        ax.set(**labels)
        ax.set_title(_titled(labels["title"], subject))
        _finish(fig, ax)
        paths.append(out / f"{stem}{kind}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def _titled(title: str, subject: str) -> str:
    return f"{title}\n{subject}" if subject else title


def _finish(fig: Any, ax: Any, columns: int = 3) -> None:
    """Grid, and the legend under the axes (it never covers a curve)."""
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(handles), columns), frameon=False
        )
    fig.tight_layout()


def shows_cost(run: RobustnessRun) -> bool:
    """Whether attack strength against cost says anything: at least two attacks, run with different step
    counts (under a fixed-steps protocol such as PGD-20 the times differ by noise alone)."""
    steps = {a.steps for a in run.attacks}
    return len(run.attacks) >= 2 and len(steps) > 1


def plot_efficiency(run: RobustnessRun, subject: str, out: str | Path) -> Path:
    """PgA Fig. 1 for one run: mAP under each attack against seconds per adversarial image (fit included), on
    a log axis, each point labelled with its attack and step count."""
    fig, ax = plt.subplots(figsize=(5.6, 4.6), dpi=110)
    for i, a in enumerate(run.attacks):
        x = a.seconds_per_image_amortised
        style = style_of(i, a.display_name)
        ax.scatter(x, a.map, s=60, color=style["color"], marker=style["marker"])
        steps = f" ({a.steps} steps)" if a.steps else ""
        ax.annotate(a.display_name + steps, (x, a.map), fontsize=9, xytext=(5, 5), textcoords="offset points")
    ax.axhline(run.clean.map, color="black", linewidth=1, linestyle="--", label="clean")
    ax.set(
        xscale="log",
        ylabel="mAP under attack",
        xlabel="seconds per adversarial image (log scale)",
        title=_titled("Attack strength against cost", subject),
    )
    ax.margins(x=0.25, y=0.12)
    _finish(fig, ax)
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_budget_curve(run: RobustnessRun, subject: str, out: str | Path) -> Path:
    """The query attacks' mAP against the images they had sent per query (log scale), with the clean mAP and
    the white-box robust mAP for reference."""
    fig, ax = plt.subplots(figsize=(5.6, 4.6), dpi=110)
    for i, a in enumerate(run.attacks):
        if a.budget_map:
            points = sorted((int(b), v) for b, v in a.budget_map.items())
            ax.plot([b for b, _ in points], [v for _, v in points], label=a.display_name, **style_of(i, ""))
    ax.axhline(run.clean.map, color="black", linewidth=1, linestyle="--", label="clean")
    ax.axhline(run.robust_map, color="grey", linewidth=1, linestyle=":", label="robust (all attacks)")
    ax.set(
        xscale="log",
        xlabel="queries sent per image (log scale)",
        ylabel="mAP under attack",
        title=_titled("Query attacks: mAP against budget", subject),
    )
    _finish(fig, ax)
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_certified(run: CertifyRun, subject: str, out: str | Path) -> Path:
    """Certified mAP (a lower bound) and empirical mAP (an upper bound) against the L2 radius: the band in which
    the smoothed model's true robust mAP lies."""
    fig, ax = plt.subplots(figsize=(5.6, 4.6), dpi=110)
    ax.fill_between(
        run.radii, run.certified_map, run.empirical_map, color="C0", alpha=0.12, label="the truth lies here"
    )
    ax.plot(run.radii, run.empirical_map, label="empirical (attacks: upper bound)", **style_of(0, ""))
    ax.plot(run.radii, run.certified_map, label="certified (lower bound)", **style_of(1, ""))
    ax.set(
        xlabel="L2 radius of the perturbation",
        ylabel="mAP (whole database)",
        ylim=(0, 1.02),
        title=_titled(f"Certified and empirical mAP, sigma {run.sigma:g}", subject),
    )
    _finish(fig, ax, columns=1)
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
