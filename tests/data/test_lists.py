from __future__ import annotations

import pytest
import torch
from PIL import Image

from robusthash.data import iterate_batches, load_dataset
from robusthash.errors import UserError


def _tree(root, n=4):
    (root / "img").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (40, 30), color=(10 * i, 50, 200)).save(root / "img" / f"{i}.png")


def _deephash(root, rows):
    _tree(root)
    for split in ("train", "test", "database"):
        (root / f"{split}.txt").write_text("\n".join(f"img/{i}.png {' '.join(map(str, r))}" for i, r in rows))


def test_deephash_list_loads_and_counts_zero_label_rows(tmp_path):
    _deephash(tmp_path, [(0, [1, 0, 0]), (1, [0, 1, 1]), (2, [0, 0, 0]), (3, [1, 0, 0])])
    with pytest.warns(UserWarning, match="no label"):
        data = load_dataset("deephash-list", tmp_path, image_size=16)
    assert data.num_classes == 3 and data.image_shape == (3, 16, 16)
    assert len(data.train) == 4 and data.info["zero_label_rows"] == {"train": 1, "query": 1, "database": 1}
    x, y, idx = next(iter(iterate_batches(data.query, 4)))
    assert x.shape == (4, 3, 16, 16) and torch.equal(y[2], torch.zeros(3)) and idx.tolist() == [0, 1, 2, 3]


def test_label_width_mismatch_names_file_and_item(tmp_path):
    _deephash(tmp_path, [(0, [1, 0, 0]), (1, [0, 1])])
    with pytest.raises(UserError, match=r"train\.txt.*item 2: 2 labels.*3"):
        load_dataset("deephash-list", tmp_path)


def test_missing_image_is_reported(tmp_path):
    _deephash(tmp_path, [(0, [1, 0]), (7, [0, 1])])
    with pytest.raises(UserError, match=r"1 image\(s\) .* missing: .*7\.png"):
        load_dataset("deephash-list", tmp_path)


def test_prosgan_format(tmp_path):
    _tree(tmp_path)
    for split in ("train", "test", "database"):
        (tmp_path / f"{split}_img.txt").write_text("img/0.png\nimg/1.png\n")
        (tmp_path / f"{split}_label.txt").write_text("1 0\n0 1\n")
    data = load_dataset("prosgan-list", tmp_path, image_size=8)
    assert data.num_classes == 2 and len(data.database) == 2
    (tmp_path / "test_label.txt").write_text("1 0\n")
    with pytest.raises(UserError, match="has 2 lines but .*test_label.txt has 1"):
        load_dataset("prosgan-list", tmp_path)


def test_list_dataset_needs_a_folder(tmp_path):
    with pytest.raises(UserError, match="--data-dir"):
        load_dataset("prosgan-list")
    with pytest.raises(UserError, match="not found"):
        load_dataset("prosgan-list", tmp_path)
    (tmp_path / "train.txt").write_text("img/0.png 1 x\n")
    with pytest.raises(UserError, match="0/1"):
        load_dataset("deephash-list", tmp_path)


def test_list_mistakes_name_the_file_and_what_to_do(tmp_path):
    _deephash(tmp_path, [(0, [1, 0]), (1, [0, 1])])
    (tmp_path / "database.txt").write_text("")
    with pytest.raises(
        UserError, match=r"database\.txt lists no images"
    ):  # not only the first split is checked
        load_dataset("deephash-list", tmp_path)
    (tmp_path / "database.txt").write_bytes(b"img/0.png 1 0\nimg/\xff.png 0 1\n")
    with pytest.raises(UserError, match=r"database\.txt:2: not UTF-8"):
        load_dataset("deephash-list", tmp_path)
    (tmp_path / "database.txt").write_text("img/my photo.png 1 0\n")
    with pytest.raises(UserError, match="cannot hold spaces in paths"):
        load_dataset("deephash-list", tmp_path)


def test_a_decompression_bomb_is_named(tmp_path, monkeypatch):
    _deephash(tmp_path, [(0, [1, 0]), (1, [0, 1])])
    data = load_dataset("deephash-list", tmp_path, image_size=16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40 x 30 = 1,200 pixels is over twice the limit
    with pytest.raises(UserError, match=r"0\.png is larger than Pillow's safety limit"):
        data.query[0]


def test_paths_escaping_the_data_directory_and_corrupt_images_are_named(tmp_path):
    _deephash(tmp_path / "d", [(0, [1, 0]), (1, [0, 1])])
    (tmp_path / "secret.png").write_bytes(b"not an image")
    (tmp_path / "d" / "train.txt").write_text("img/0.png 1 0\n../secret.png 0 1\n")
    with pytest.raises(UserError, match=r"train\.txt lists '\.\./secret\.png', outside the data directory"):
        load_dataset("deephash-list", tmp_path / "d")
    (tmp_path / "d" / "train.txt").write_text("img/0.png 1 0\nimg/../img/1.png 0 1\n")  # stays inside: fine
    load_dataset("deephash-list", tmp_path / "d", image_size=16)
    (tmp_path / "d" / "img" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = load_dataset("deephash-list", tmp_path / "d", image_size=16)
    with pytest.raises(UserError, match=r"cannot read image .*1\.png"):
        data.query[1]
