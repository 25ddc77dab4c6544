"""core.preprocess against PaddleClas 2.6.0's own transform classes on 20 real images.

The reference crops in tests/data/preprocess/reference-*.npz were made by PaddleClas's DecodeImage,
ResizeImage and CropImage (its deploy and ppcls copies agreeing) with the eval and infer configs of each
family; tests/data/preprocess/make_reference.py made them, in an environment of its own, and checked that
PaddleClas's NormalizeImage + ToCHWImage equal the float32 formula (``normalize_image`` here) on every
crop; ``Preprocess.normalise`` (a table of the 256 values) equals that formula on every value.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.preprocess import (
    DEFAULT_PIPELINE,
    PIPELINES,
    ImageError,
    Preprocess,
    for_family,
    for_model,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "preprocess"  # reference.json + one npz per pipeline (make_reference.py)


def _reference() -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """(meta, {pipeline: {image: uint8 HWC crop}}), MobileViT/infer rebuilt from its stored difference."""
    meta = json.loads((REFERENCE / "reference.json").read_text())
    crops = {}
    for pipeline in meta["pipelines"]:
        file = "reference-" + pipeline.lower().replace("/", "-") + ".npz"
        with np.load(REFERENCE / file) as stored:
            crops[pipeline] = {image: np.asarray(Image.open(io.BytesIO(stored[image].tobytes())))
                               for image in stored.files}
    for image, residual in crops["MobileViT/infer"].items():
        eval_rgb = crops["MobileViT/eval"][image][:, :, ::-1].astype(np.int16)
        crops["MobileViT/infer"][image] = (residual.astype(np.int16) - 128 + eval_rgb).astype(np.uint8)
    return meta, crops


def normalize_image(preprocess: Preprocess, crop: np.ndarray) -> np.ndarray:
    """PaddleClas's NormalizeImage + ToCHWImage, as the generator checked them bit for bit: float32 arithmetic."""
    mean, std = np.asarray(preprocess.mean, np.float32), np.asarray(preprocess.std, np.float32)
    array = (crop.astype(np.float32) * np.float32(preprocess.scale) - mean) / std
    return np.ascontiguousarray(array.transpose(2, 0, 1))


META, CROPS = _reference()
MODEL_OF = {"LeViT": "LeViT_128S", "MobileViT": "MobileViT_XXS"}


def test_reference_covers_what_the_issue_asks():
    images = META["images"]
    assert len(images) >= 20 and META["paddleclas"] == "2.6.0"
    assert {"deploy", "ppcls"} <= set(META["transforms"])
    sizes = {Image.open(ROOT / name).size for name in images}
    assert len(sizes) >= 12 and min(min(s) for s in sizes) < 224  # varied, one below the crop
    modes = {Image.open(ROOT / name).mode for name in images}
    assert {"L", "RGBA", "CMYK", "RGB"} <= modes  # grayscale JPEG, PNG with alpha, CMYK JPEG


@pytest.mark.parametrize("pipeline", sorted(CROPS))
def test_tensors_equal_paddleclas(pipeline):
    family, name = pipeline.split("/")
    preprocess = for_family(family, name)
    worst = {}
    for image, crop in CROPS[pipeline].items():
        ours = for_model(MODEL_OF[family], name)(ROOT / image)
        theirs = normalize_image(preprocess, crop)
        assert ours.shape == theirs.shape == (3, preprocess.crop, preprocess.crop) and ours.dtype == np.float32
        worst[image] = float(np.abs(ours - theirs).max())
    assert max(worst.values()) <= 1e-5, {k: v for k, v in worst.items() if v > 1e-5}


@pytest.mark.parametrize("preprocess", [
    *(for_family(family, pipeline) for family in ("LeViT", "MobileViT") for pipeline in PIPELINES),
    Preprocess(resize_short=None, crop=None, resize=(16, 16), mean=(0.5, 0.25, 0.1), std=(0.3, 0.7, 1.9),
               scale=1 / 127.5),  # a brought model's config: other mean, std and scale
], ids=lambda p: f"{p.pipeline}-{p.mean[0]}")
def test_normalise_equals_normalize_image_on_every_value(preprocess):
    # Elementwise on uint8: all 256 values in every channel (in different places) prove it for every image.
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    crop = np.stack([every, every[::-1], every.T], axis=-1)
    ours = preprocess.normalise(crop)
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, normalize_image(preprocess, crop))
    with pytest.raises(ValueError, match="uint8"):
        preprocess.normalise(crop.astype(np.float32))


def test_levit_pipelines_agree_and_mobilevit_ones_do_not():
    image = ROOT / META["images"][0]
    np.testing.assert_array_equal(for_model("LeViT_128S", "eval")(image), for_model("LeViT_128S", "infer")(image))
    assert np.abs(for_model("MobileViT_S", "eval")(image) - for_model("MobileViT_S", "infer")(image)).max() > 0.1


def test_pipelines_are_recorded_settings():
    assert DEFAULT_PIPELINE == "eval" and PIPELINES == ("eval", "infer")
    levit = for_model("LeViT_384").to_dict()
    assert levit["resize_backend"] == "cv2" and levit["channel_order"] == "RGB" and levit["pipeline"] == "eval"
    mobilevit = for_model("MobileViT_XXS").to_dict()
    assert (mobilevit["resize_backend"], mobilevit["channel_order"], mobilevit["pipeline"]) == ("pil", "BGR", "eval")
    assert Preprocess.from_dict(json.loads(json.dumps(mobilevit))) == for_model("MobileViT_XXS")


def test_unknown_model_and_pipeline():
    with pytest.raises(ValueError, match="no PaddleClas preprocessing for model 'MyNet'"):
        for_model("MyNet")
    with pytest.raises(ValueError, match="pipeline must be one of eval, infer, got 'train'"):
        for_model("LeViT_128S", "train")


def test_undecodable_and_too_small(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="imdecode failed"):
        for_model("LeViT_128S")(junk)
    with pytest.raises(ImageError, match="cannot read"):
        for_model("LeViT_128S")(tmp_path / "missing.jpg")
    # resize_short below the crop (a custom pipeline): PaddleClas's CropImage cannot cut it either.
    odd = Preprocess(resize_short=20, crop=32, mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ImageError, match="smaller than the 32 crop"):
        odd(ROOT / META["images"][0])
