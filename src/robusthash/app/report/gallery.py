"""The retrieval gallery: a query and its top-10, next to the adversarial query, its perturbation and its top-10.

Drawn only from what the attack step stored (:class:`~robusthash.results.Gallery`): no model, no data, no attack
is run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from robusthash.results import Gallery  # noqa: E402

GREEN, RED = "#1a9850", "#d73027"
FONT = 12  # labels stay legible when the page scales the figure to its width


def _show(ax: Any, img: np.ndarray, border: str | None = None, title: str = "") -> None:
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if border:
        h, w = img.shape[-2:]
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=border, linewidth=4))
    if title:
        ax.set_title(title, fontsize=FONT)


def draw_gallery(galleries: dict[str, Gallery], out: str | Path, amplify: float = 10.0) -> Path:
    """One block per model (``label -> stored gallery``): for each query, the clean query, its labels and its
    top retrievals, then the adversarial query, its perturbation (x ``amplify``, centred on grey) and its top
    retrievals. Green borders mark relevant items, red irrelevant ones. Returns the PNG path."""
    top = max((len(i.clean_top) for g in galleries.values() for i in g.items), default=0)
    rows = sum(2 * len(g.items) for g in galleries.values())
    fig, axes = plt.subplots(
        max(rows, 1), top + 2, figsize=(1.15 * (top + 2), 1.45 * max(rows, 1)), dpi=100, squeeze=False
    )
    row = 0
    for label, gallery in galleries.items():
        for item in gallery.items:
            clean = gallery.decode_image(item.clean)
            adv = gallery.decode_image(item.adversarial)
            names = gallery.class_names
            text = ", ".join(names[i] if names else str(i) for i in item.labels) or "(none)"
            for kind, image, ranked, relevant in (
                ("clean", clean, item.clean_top, item.clean_relevant),
                (gallery.attack, adv, item.adversarial_top, item.adversarial_relevant),
            ):
                ax_row = axes[row]
                _show(
                    ax_row[0], image, title=f"{label}\n{kind} query" if kind == "clean" else f"{kind} query"
                )
                if kind == "clean":
                    ax_row[1].axis("off")
                    ax_row[1].text(0.5, 0.5, text, ha="center", va="center", fontsize=FONT, wrap=True)
                else:
                    _show(
                        ax_row[1],
                        np.clip(0.5 + amplify * (adv - clean), 0, 1),
                        title=f"perturbation x{amplify:g}",
                    )
                for j, (db_index, rel) in enumerate(zip(ranked, relevant, strict=True)):
                    _show(
                        ax_row[2 + j],
                        gallery.decode_image(gallery.database[str(db_index)]),
                        GREEN if rel else RED,
                        title=f"#{j + 1}" if j == 0 else "",
                    )
                ax_row[-1].set_title(f"{sum(relevant)}/{len(relevant)} relevant", fontsize=FONT, loc="right")
                row += 1
    fig.suptitle("Retrieval before and after attack (green: relevant, red: not)", fontsize=FONT + 3)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
