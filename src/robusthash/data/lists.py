"""Users' own image datasets from list files, in the two formats the hashing code bases use.

- ``deephash-list`` (DeepHash-pytorch): ``train.txt``, ``test.txt``, ``database.txt`` in ``data_dir``, one
  image per line: ``relpath l1 l2 ... lC`` with 0/1 labels.
- ``prosgan-list`` (ProS-GAN, CgAT, PgA): ``{split}_img.txt`` (one relpath per line) and ``{split}_label.txt``
  (C integers per line), split in train / test / database.

The ``test`` split is the query set. Paths are relative to ``data_dir`` and must stay inside it (``../`` out of
it is refused: a list that reaches elsewhere is a mistake or a hostile file); absolute paths are kept, as written.
Images are loaded as RGB, resized to ``image_size * 256 / 224`` and centre-cropped to ``image_size`` (the
papers' 256 -> 224 protocol by default). Rows with no label at all are kept and counted in ``info`` (FLICKR-25K
has such rows); label-width mismatches and missing files are errors that name the file and line.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from robusthash.data.base import DatasetSpec, DatasetSplits, register_dataset
from robusthash.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_FILES = {"train": "train", "query": "test", "database": "database"}


class FileImageSet(Dataset):
    """A split read from image files on demand."""

    def __init__(self, paths: list[Path], labels: Tensor, image_size: int) -> None:
        from torchvision import transforms

        self.paths = paths
        self.labels = labels
        self.transform = transforms.Compose(
            [
                transforms.Resize(round(image_size * 256 / 224)),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        try:
            with Image.open(self.paths[index]) as img:
                image = self.transform(img.convert("RGB"))
        except Image.DecompressionBombError:
            raise UserError(
                f"image {self.paths[index]} is larger than Pillow's safety limit of "
                f"{Image.MAX_IMAGE_PIXELS} pixels (a decompression bomb?); resize it first"
            ) from None
        except OSError as exc:
            raise UserError(f"cannot read image {self.paths[index]}: {exc}") from None
        return image, self.labels[index], torch.tensor(index)


def _parse_labels(tokens: list[str], where: str) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError as exc:
        raise UserError(f"{where}: labels must be 0/1 numbers, got {' '.join(tokens)!r}") from exc
    if any(v not in (0.0, 1.0) for v in values):
        raise UserError(f"{where}: labels must be 0 or 1, got {' '.join(tokens)!r}")
    return values


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"list file {path} not found")
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UserError(f"{path}:{number}: not UTF-8 text; save the list file as UTF-8") from None
        if line:
            lines.append(line)
    return lines


def _read_deephash(path: Path) -> tuple[list[str], list[list[float]]]:
    paths, labels = [], []
    for number, line in enumerate(_read_lines(path), 1):
        tokens = line.split()
        if len(tokens) < 2:
            raise UserError(f"{path}:{number}: expected 'relpath l1 ... lC', got {line!r}")
        if any(t not in ("0", "1", "0.0", "1.0") for t in tokens[1:]) and not Path(tokens[0]).suffix:
            raise UserError(
                f"{path}:{number}: the path seems to contain a space ({' '.join(tokens[:2])!r} ...); "
                "the DeepHash list format separates fields by spaces and cannot hold spaces in paths: "
                "rename the file or use the prosgan-list format"
            )
        paths.append(tokens[0])
        labels.append(_parse_labels(tokens[1:], f"{path}:{number}"))
    return paths, labels


def _read_prosgan(data_dir: Path, split: str) -> tuple[list[str], list[list[float]]]:
    img_file, label_file = data_dir / f"{split}_img.txt", data_dir / f"{split}_label.txt"
    paths = _read_lines(img_file)
    label_lines = _read_lines(label_file)
    if len(paths) != len(label_lines):
        raise UserError(f"{img_file} has {len(paths)} lines but {label_file} has {len(label_lines)}")
    labels = [_parse_labels(line.split(), f"{label_file}:{n}") for n, line in enumerate(label_lines, 1)]
    return paths, labels


def _check_width(rows: list[list[float]], width: int | None, where: str) -> int:
    if not rows:
        raise UserError(f"{where} lists no images")
    for number, row in enumerate(rows, 1):
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise UserError(f"{where}, item {number}: {len(row)} labels, but earlier rows have {width}")
    assert width is not None
    return width


def _inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refused when ``..`` takes it out of ``root`` (decided on the text, not on links)."""
    path = root / relative
    if not os.path.normpath(path).startswith(os.path.join(os.path.normpath(root), "")):
        raise UserError(
            f"{where} lists {relative!r}, outside the data directory {root}; list paths relative to "
            "it, or write an absolute path if the image really lives elsewhere"
        )
    return path


def load_list_dataset(data_dir: str | Path | None, fmt: str, image_size: int = 224) -> DatasetSplits:
    """Load ``deephash-list`` or ``prosgan-list`` data from ``data_dir`` (module docstring)."""
    if not data_dir:
        raise UserError(f"dataset {fmt} needs --data-dir DIR holding its list files")
    if image_size < 8:
        raise UserError(f"image size {image_size} too small; use at least 8 pixels")
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"data directory {root} does not exist")
    splits: dict[str, FileImageSet] = {}
    width: int | None = None
    zero_rows: dict[str, int] = {}
    for split, stem in SPLIT_FILES.items():
        if fmt == "deephash-list":
            rel, rows = _read_deephash(root / f"{stem}.txt")
            where = str(root / f"{stem}.txt")
        else:
            rel, rows = _read_prosgan(root, stem)
            where = str(root / f"{stem}_label.txt")
        width = _check_width(rows, width, where)
        paths = [Path(p) if Path(p).is_absolute() else _inside(root, p, where) for p in rel]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise UserError(f"{len(missing)} image(s) listed in {where} are missing: {shown}")
        labels = torch.tensor(rows, dtype=torch.float32)
        zero_rows[split] = int((labels.sum(1) == 0).sum())
        splits[split] = FileImageSet(paths, labels, image_size)
    if any(zero_rows.values()):
        warnings.warn(f"rows with no label (kept, never relevant to any query): {zero_rows}", stacklevel=2)
    assert width is not None
    return DatasetSplits(
        name=fmt,
        train=splits["train"],
        query=splits["query"],
        database=splits["database"],
        num_classes=width,
        image_shape=(3, image_size, image_size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        info={"source": str(root), "zero_label_rows": zero_rows, "image_size": image_size},
    )


for _fmt, _desc in (
    ("deephash-list", "your images: train.txt / test.txt / database.txt with 'relpath l1 ... lC' lines"),
    ("prosgan-list", "your images: {train,test,database}_img.txt + _label.txt (ProS-GAN / CgAT format)"),
):
    register_dataset(
        DatasetSpec(
            _fmt,
            _desc,
            lambda: "--data-dir DIR (required)",
            lambda data_dir, seed, database, image_size, _f=_fmt: load_list_dataset(
                data_dir, _f, image_size or 224
            ),
        )
    )
