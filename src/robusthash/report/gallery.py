"""The retrieval gallery: a query and its top-10, next to the adversarial query, its perturbation and its top-10."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from robusthash.attacks import CodeBank, create_attack  # noqa: E402
from robusthash.data import DatasetSplits, labels_of  # noqa: E402
from robusthash.evaluation import encode, encode_images  # noqa: E402
from robusthash.metrics import hamming_ranking  # noqa: E402
from robusthash.models import HashModel  # noqa: E402

GREEN, RED = "#1a9850", "#d73027"


def _show(ax: Any, image: torch.Tensor, border: str | None = None, title: str = "") -> None:
    img = image.detach().cpu().numpy()
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
        ax.set_title(title, fontsize=7)


def _label_text(labels: torch.Tensor, names: list[str] | None) -> str:
    idx = torch.nonzero(labels)[:, 0].tolist()
    return ", ".join(names[i] if names else str(i) for i in idx) or "(none)"


def retrieval_gallery(
    models: dict[str, HashModel],
    data: DatasetSplits,
    out: str | Path,
    attack: str = "pga",
    queries: int = 3,
    top: int = 10,
    amplify: float = 10.0,
    seed: int = 0,
    caption: str = "",
    device: torch.device | str = "cpu",
    attack_options: dict[str, Any] | None = None,
) -> Path:
    """Draw, for ``queries`` queries and each model: the clean query and its top-``top`` database items, then the
    adversarial query (attack ``attack`` with its defaults), its perturbation (x ``amplify``, centred on grey)
    and its top-``top``. Green borders mark relevant items, red irrelevant ones. Returns the PNG path."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(data.query), generator=g)[:queries].sort().values
    x, y, _ = data.query.batch(picks) if hasattr(data.query, "batch") else _stack(data.query, picks)
    db_images = data.database
    db_labels = labels_of(data.database)
    rows = len(models) * queries * 2
    fig, axes = plt.subplots(rows, top + 2, figsize=(1.05 * (top + 2), 1.25 * rows), dpi=100, squeeze=False)
    row = 0
    for model_name, model in models.items():
        model = model.to(device).eval()
        db_codes = encode(model, db_images, device)
        reference = CodeBank(encode(model, data.train, device), labels_of(data.train))
        database = CodeBank(db_codes, db_labels)
        adv = create_attack(attack, model, reference=reference, database=database, seed=seed,
                            **(attack_options or {}))(x, y)  # fmt: skip
        for i in range(queries):
            for kind, image in (("clean", x[i]), (attack, adv[i])):
                code = encode_images(model, image[None], device)
                ranked = hamming_ranking(code, db_codes, top)[0]
                ax_row = axes[row]
                title = f"{model_name}\n{kind} query" if kind == "clean" else f"{kind} query"
                _show(ax_row[0], image, title=title)
                if kind == "clean":
                    ax_row[1].axis("off")
                    ax_row[1].text(0.5, 0.5, _label_text(y[i], data.class_names), ha="center", va="center",
                                   fontsize=7, wrap=True)  # fmt: skip
                else:
                    _show(ax_row[1], (0.5 + amplify * (image - x[i])).clamp(0, 1),
                          title=f"perturbation x{amplify:g}")  # fmt: skip
                hits = 0
                for j, db_index in enumerate(ranked):
                    relevant = bool((db_labels[db_index] * y[i]).sum() > 0)
                    hits += relevant
                    img = db_images[int(db_index)][0]
                    _show(ax_row[2 + j], img, GREEN if relevant else RED, title=f"#{j + 1}" if j == 0 else "")
                ax_row[-1].set_title(f"{hits}/{top} relevant", fontsize=7, loc="right")
                row += 1
    fig.suptitle("Retrieval before and after attack (green: relevant, red: not)", fontsize=10)
    if caption:
        fig.text(0.5, 0.003, caption, ha="center", va="bottom", fontsize=7, color="#444")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _stack(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    return torch.stack([a for a, _, _ in items]), torch.stack([b for _, b, _ in items]), indices
