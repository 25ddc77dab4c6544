"""Data sets: layouts, streaming, errors, fingerprints, and preprocessing of real ImageNet images."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import DataError, SyntheticDataset, open_dataset
from core.preprocess import Preprocess, for_model
from export.models import get_spec

DATA_44 = Path(__file__).resolve().parents[1] / "data" / "imagenet-val-44"
SMALL = Preprocess(resize_short=20, crop=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def jpeg(path: Path, seed: int, size=(24, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")
    return path


def list_folder(root: Path, labels: list[int], list_name: str = "val_list.txt") -> Path:
    lines = []
    for i, label in enumerate(labels):
        jpeg(root / "images" / f"img_{i:02d}.jpg", seed=i)
        lines.append(f"images/img_{i:02d}.jpg {label}")
    (root / list_name).write_text("\n".join(lines) + "\n")
    return root


# --- layouts -----------------------------------------------------------------------------------------------

def test_list_format_folder(tmp_path):
    list_folder(tmp_path, [3, 1, 4])
    ds = open_dataset(tmp_path, preprocess=SMALL)
    assert ds.kind == "list" and len(ds) == 3 and ds.has_labels
    (batch,) = list(ds.batches(8))
    assert batch.images.shape == (3, 3, 16, 16) and batch.images.dtype == np.float32
    assert batch.labels.tolist() == [3, 1, 4]
    assert batch.names == ["images/img_00.jpg", "images/img_01.jpg", "images/img_02.jpg"]
    d = ds.describe()
    assert d["kind"] == "list" and d["count"] == 3 and d["root"] == str(tmp_path.resolve())
    assert d["preprocess"]["crop"] == 16 and len(d["sha256"]) == 64 and d["skipped"] == []


def test_list_file_given_explicitly(tmp_path):
    list_folder(tmp_path, [0, 1], list_name="my_labels.txt")
    ds = open_dataset(tmp_path, preprocess=SMALL, labels=tmp_path / "my_labels.txt")
    assert ds.kind == "list" and len(ds) == 2
    # The list file itself as the source: its folder is the root.
    assert open_dataset(tmp_path / "my_labels.txt", preprocess=SMALL).names() == ds.names()


def test_image_folder_sorted_and_numeric(tmp_path):
    for i, cls in enumerate(["n02", "n01", "n01"]):
        jpeg(tmp_path / "named" / cls / f"{i}.jpg", seed=i)
    ds = open_dataset(tmp_path / "named", preprocess=SMALL)
    assert ds.kind == "imagefolder" and ds.describe()["label_source"] == "sorted_order"
    (batch,) = list(ds.batches(4))
    assert batch.names == ["n01/1.jpg", "n01/2.jpg", "n02/0.jpg"] and batch.labels.tolist() == [0, 0, 1]

    for i, cls in enumerate(["7", "42"]):
        jpeg(tmp_path / "numeric" / cls / f"{i}.jpg", seed=i)
    numeric = open_dataset(tmp_path / "numeric", preprocess=SMALL)
    assert numeric.describe()["label_source"] == "folder_name"
    assert dict(zip(numeric.names(), [s.label for s in numeric.samples], strict=True)) == {
        "42/1.jpg": 42, "7/0.jpg": 7}


def test_image_folder_class_map(tmp_path):
    jpeg(tmp_path / "data" / "n01443537" / "a.jpg", seed=0)
    jpeg(tmp_path / "data" / "n01440764" / "b.jpg", seed=1)
    cmap = tmp_path / "synsets.txt"
    cmap.write_text("n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n")
    ds = open_dataset(tmp_path / "data", preprocess=SMALL, class_map=cmap)
    assert [s.label for s in ds.samples] == [0, 1]
    cmap.write_text("n01440764 tench\n")
    with pytest.raises(DataError, match="n01443537: class folder not listed"):
        open_dataset(tmp_path / "data", preprocess=SMALL, class_map=cmap)


def test_plain_folder_has_no_labels(tmp_path):
    jpeg(tmp_path / "b.jpg", seed=0)
    jpeg(tmp_path / "a.png", seed=1)
    (tmp_path / "notes.md").write_text("not an image")
    ds = open_dataset(tmp_path, preprocess=SMALL)
    assert ds.kind == "folder" and not ds.has_labels and ds.names() == ["a.png", "b.jpg"]
    (batch,) = list(ds.batches(2))
    assert batch.labels is None and batch.images.shape == (2, 3, 16, 16)


def test_synthetic_default_is_seeded_and_batch_independent():
    ds = open_dataset(preprocess=get_spec("MobileViT_XXS").preprocess, count=5, seed=3)
    assert isinstance(ds, SyntheticDataset) and ds.input_shape == (3, 256, 256)
    by_two = np.concatenate([b.images for b in ds.batches(2)])
    by_five = np.concatenate([b.images for b in ds.batches(5)])
    np.testing.assert_array_equal(by_two, by_five)  # tensors do not depend on the batch size
    assert abs(float(by_five.mean())) < 0.01 and abs(float(by_five.std()) - 1) < 0.01
    assert ds.describe()["sha256"] == SyntheticDataset(5, (3, 256, 256), 3).fingerprint
    assert ds.fingerprint != SyntheticDataset(5, (3, 256, 256), 4).fingerprint


# --- streaming ---------------------------------------------------------------------------------------------

def test_streams_in_batches_and_decodes_lazily(tmp_path):
    list_folder(tmp_path, list(range(10)))
    ds = open_dataset(tmp_path, preprocess=SMALL)
    assert ds.decoded == 0  # opening lists files, it decodes nothing
    stream = ds.batches(4)
    first = next(stream)
    assert first.images.shape[0] == 4 and ds.decoded == 4  # only the first batch's images so far
    # Images removed now were never decoded up front: they show up as skipped, not as data.
    (tmp_path / "images" / "img_09.jpg").unlink()
    rest = list(stream)
    assert [b.images.shape[0] for b in rest] == [4, 1]
    assert [s["name"] for s in ds.skipped] == ["images/img_09.jpg"]


def test_batch_sizes_4_4_2():
    assert [b.images.shape[0] for b in SyntheticDataset(10, (3, 8, 8)).batches(4)] == [4, 4, 2]


def test_worker_processes_match_sequential(tmp_path):
    list_folder(tmp_path, list(range(10)))
    seq = np.concatenate([b.images for b in open_dataset(tmp_path, preprocess=SMALL).batches(4)])
    par = np.concatenate([b.images for b in open_dataset(tmp_path, preprocess=SMALL, workers=2).batches(4)])
    np.testing.assert_array_equal(seq, par)


# --- bad data ----------------------------------------------------------------------------------------------

def test_corrupt_image_is_skipped_and_reported(tmp_path, caplog):
    list_folder(tmp_path, [0, 1, 2, 3, 4])
    (tmp_path / "images" / "img_01.jpg").write_bytes(b"this is not a jpeg")
    good = (tmp_path / "images" / "img_03.jpg").read_bytes()
    (tmp_path / "images" / "img_03.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    ds = open_dataset(tmp_path, preprocess=SMALL)
    with caplog.at_level(logging.WARNING, logger="core.datasets"):
        batches = list(ds.batches(2))
    assert [b.names for b in batches] == [["images/img_00.jpg", "images/img_02.jpg"], ["images/img_04.jpg"]]
    assert [b.labels.tolist() for b in batches] == [[0, 2], [4]]
    assert [s["name"] for s in ds.skipped] == ["images/img_01.jpg", "images/img_03.jpg"]
    assert all(s["reason"] and s["path"].endswith(s["name"]) for s in ds.skipped)
    assert "img_01.jpg" in caplog.text and "img_03.jpg" in caplog.text
    assert [s["name"] for s in ds.describe()["skipped"]] == ["images/img_01.jpg", "images/img_03.jpg"]


def test_all_images_unreadable(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"junk")
    ds = open_dataset(tmp_path, preprocess=SMALL)
    with pytest.raises(DataError, match="none of the 3 images could be read"):
        list(ds.batches(2))


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        open_dataset(tmp_path / "nowhere", preprocess=SMALL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        open_dataset(tmp_path / "empty", preprocess=SMALL)
    (tmp_path / "val_list.txt").write_text("\n\n")
    with pytest.raises(DataError, match="val_list.txt: no entries"):
        open_dataset(tmp_path, preprocess=SMALL)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("images/img_01.jpg", r"val_list.txt:2: malformed line 'images/img_01.jpg'"),
        ("images/img_01.jpg one", r"val_list.txt:2: malformed line"),
        ("images/img_01.jpg 1000", r"val_list.txt:2: label 1000 outside 0..999"),
        ("images/img_01.jpg -1", r"val_list.txt:2: label -1 outside 0..999"),
        ("images/missing.jpg 5", r"val_list.txt:2: listed image images/missing.jpg not found"),
    ],
)
def test_list_errors_name_file_and_line(tmp_path, line, message):
    list_folder(tmp_path, [0, 1])
    (tmp_path / "val_list.txt").write_text(f"images/img_00.jpg 0\n{line}\n")
    with pytest.raises(DataError, match=message):
        open_dataset(tmp_path, preprocess=SMALL)


def test_label_range_follows_num_classes(tmp_path):
    list_folder(tmp_path, [0, 9])
    assert len(open_dataset(tmp_path, preprocess=SMALL, num_classes=10)) == 2
    with pytest.raises(DataError, match=r"val_list.txt:2: label 9 outside 0..8"):
        open_dataset(tmp_path, preprocess=SMALL, num_classes=9)


def test_image_needs_preprocess(tmp_path):
    jpeg(tmp_path / "a.jpg", seed=0)
    with pytest.raises(ValueError, match="preprocessing"):
        open_dataset(tmp_path)


# --- fingerprint -------------------------------------------------------------------------------------------

def test_fingerprint_tracks_names_labels_and_preprocessing(tmp_path):
    list_folder(tmp_path, [0, 1, 2])
    base = open_dataset(tmp_path, preprocess=SMALL).fingerprint
    assert open_dataset(tmp_path, preprocess=SMALL).fingerprint == base
    assert open_dataset(tmp_path, preprocess=replace(SMALL, channel_order="BGR")).fingerprint != base
    (tmp_path / "val_list.txt").write_text("images/img_00.jpg 0\nimages/img_01.jpg 1\nimages/img_02.jpg 5\n")
    assert open_dataset(tmp_path, preprocess=SMALL).fingerprint != base


# --- real images -------------------------------------------------------------------------------------------

def test_real_imagenet_images_preprocess():
    assert DATA_44.is_dir(), f"{DATA_44} is part of the repository"
    levit = open_dataset(DATA_44, preprocess=get_spec("LeViT_128S").preprocess)
    assert levit.kind == "list" and len(levit) == 44
    batch = next(levit.batches(2))
    assert batch.images.shape == (2, 3, 224, 224) and batch.labels.tolist() == [65, 970]
    # (x/255 - mean) / std spans [-0.485/0.229, (1-0.406)/0.225] = [-2.118, 2.640]
    assert batch.images.min() >= -2.1180 and batch.images.max() <= 2.6401
    assert batch.images.std() > 0.3  # a real photograph, not a flat tensor

    # MobileViT: the eval config (the default) is BGR with Pillow's resize, the infer config RGB with OpenCV's.
    bgr_set = open_dataset(DATA_44, preprocess=get_spec("MobileViT_XXS").preprocess)
    bgr = next(bgr_set.batches(1)).images
    assert bgr.shape == (1, 3, 256, 256) and bgr.min() >= 0.0 and bgr.max() <= 1.0
    assert bgr_set.describe()["preprocess"]["channel_order"] == "BGR"
    assert bgr_set.describe()["preprocess"]["pipeline"] == "eval"
    infer = open_dataset(DATA_44, preprocess=for_model("MobileViT_XXS", "infer"))
    rgb = next(infer.batches(1)).images
    assert infer.describe()["preprocess"]["pipeline"] == "infer"
    assert 0 < np.abs(rgb[:, ::-1] - bgr).max() < 0.5  # same image, channels swapped, another resize filter


def test_images_smaller_than_the_crop_are_enlarged_and_named(tmp_path):
    """PaddleClas's resize_short enlarges an image whose short side is below the crop; the set records which."""
    jpeg(tmp_path / "small.jpg", seed=1, size=(14, 12))  # below SMALL's 16 crop
    jpeg(tmp_path / "large.jpg", seed=2, size=(40, 30))
    ds = open_dataset(tmp_path, preprocess=SMALL)
    assert ds.check() == 0 and ds.enlarged == ["small.jpg"]
    images = next(ds.batches(2)).images
    assert images.shape == (2, 3, 16, 16)
    enlarged = ds.describe()["enlarged"]
    assert enlarged["count"] == 1 and enlarged["names"] == ["small.jpg"] and "resize_short" in enlarged["policy"]
