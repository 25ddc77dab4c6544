"""Make the PaddleClas reference crops that tests/test_preprocess_paddleclas.py compares core.preprocess with.

Run it in a throwaway environment holding PaddleClas 2.6.0 and what it pins (never in this project's venv,
whose numpy 2 that OpenCV build cannot load), from the repository root:

    python3.11 -m venv /tmp/ppcls-env
    /tmp/ppcls-env/bin/pip install numpy==1.24.4 opencv-python==4.6.0.66 pillow==13.0.0 paddlepaddle==3.3.1 six==1.17.0
    pip download --no-deps paddleclas==2.6.0 -d /tmp/dl
    unzip -q /tmp/dl/paddleclas-2.6.0-py3-none-any.whl -d /tmp/ppcls-whl
    /tmp/ppcls-env/bin/python tests/data/preprocess/make_reference.py --wheel /tmp/ppcls-whl \
        [--source /path/to/PaddleClas]   # a PaddleClas git checkout at d6892e564 (the release/2.6 commit)

The wheel carries PaddleClas's deployment transforms (``deploy/python/preprocess.py``); the training/eval
transforms (``ppcls/data/preprocess/ops/operators.py``, what ``tools/eval.py`` runs for the published top-1)
are only in the git tree: with ``--source`` both are run and must give identical crops. numpy 1.24.4 and
opencv-python 4.6.0.66 are PaddleClas 2.6.0's own pins; Pillow is this project's pin (its resampling is what
MobileViT's eval config runs).

What it writes (the test images are made first, from the bundled data/ images, when missing):
- ``images/``: the made images (grayscale JPEG, PNG with alpha, CMYK JPEG, an image smaller than the crop,
  extreme aspect ratios, an EXIF-rotated JPEG, a side just above the crop).
- ``reference.json`` (what made them) and ``reference-<family>-<pipeline>.npz``: per pipeline and image, the
  uint8 crop PaddleClas feeds ``NormalizeImage`` (HWC, in the channel order the model sees), as lossless WebP
  bytes (13 MB of raw crops take 3 MB); MobileViT/infer
  is stored as its difference from MobileViT/eval in RGB order plus 128 (the same scale, another filter:
  small numbers). Stored before normalisation because uint8 compresses far better than float32; the script
  checks once that PaddleClas's ``NormalizeImage`` + ``ToCHWImage`` equal the documented formula
  ``(crop * float32(1/255) - mean) / std`` on every crop (bit for bit), so the test applies that formula to
  the stored crops and compares float tensors with core.preprocess's.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
VAL = ROOT / "data" / "imagenet-val-44" / "images"

# Bundled ImageNet validation images of varied sizes (500x375, 375x500, 700x248, 800x659, 500x500, ...);
# ILSVRC2012_val_00000034 is a real grayscale JPEG.
BUNDLED = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 9, 15, 34, 35, 39, 40, 41, 52, 55, 58, 60)]

# The eval and infer configs of PaddleClas 2.6.0 (ppcls/configs/ImageNet/{LeViT,MobileViT}/*.yaml).
PIPELINES = {
    "LeViT/eval": dict(to_rgb=True, resize=dict(resize_short=256), crop=224,
                       mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    "MobileViT/eval": dict(to_rgb=False, resize=dict(resize_short=292, interpolation="bilinear", backend="pil"),
                           crop=256, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
    "MobileViT/infer": dict(to_rgb=True, resize=dict(resize_short=292), crop=256,
                            mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
}


def _open(name: str) -> Image.Image:
    return Image.open(VAL / name)


def _made_images() -> dict[str, callable]:
    """File name -> how it is made from a bundled image (Pillow only, deterministic)."""
    def gray(path):
        _open("ILSVRC2012_val_00000002.JPEG").convert("L").resize((300, 225)).save(path, quality=90)

    def alpha(path):
        image = _open("ILSVRC2012_val_00000003.JPEG").resize((240, 180)).convert("RGBA")
        ramp = np.tile(np.linspace(0, 255, 240, dtype=np.uint8), (180, 1))
        image.putalpha(Image.fromarray(ramp))
        image.save(path)

    def cmyk(path):
        _open("ILSVRC2012_val_00000004.JPEG").resize((400, 300)).convert("CMYK").save(path, quality=90)

    def tiny(path):  # smaller than the crop: resize_short enlarges it
        _open("ILSVRC2012_val_00000006.JPEG").resize((48, 36)).save(path, quality=95)

    def panorama(path):  # 7:1
        _open("ILSVRC2012_val_00000007.JPEG").crop((0, 130, 500, 200)).save(path, quality=90)

    def tall(path):  # 1:4, PNG
        _open("ILSVRC2012_val_00000008.JPEG").crop((200, 0, 290, 375)).save(path)

    def exif_rotated(path):  # orientation 6: decoders that honour EXIF turn it upright
        exif = Image.Exif()
        exif[0x0112] = 6
        _open("ILSVRC2012_val_00000010.JPEG").resize((300, 200)).save(path, quality=90, exif=exif)

    def near_crop(path):  # short side just above the LeViT crop
        _open("ILSVRC2012_val_00000013.JPEG").resize((257, 225)).save(path, quality=90)

    return {"gray.jpg": gray, "alpha.png": alpha, "cmyk.jpg": cmyk, "tiny.jpg": tiny, "panorama.jpg": panorama,
            "tall.png": tall, "exif_rotated.jpg": exif_rotated, "near_crop.jpg": near_crop}


def make_images() -> list[Path]:
    folder = HERE / "images"
    folder.mkdir(exist_ok=True)
    for name, make in _made_images().items():
        if not (folder / name).is_file():
            make(folder / name)
    return [VAL / n for n in BUNDLED] + [folder / n for n in _made_images()]


def _package(name: str, path: Path) -> None:
    """Register ``name`` as a package at ``path`` without running its __init__ (which imports the world)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def load_transforms(wheel: Path, source: Path | None) -> dict[str, types.ModuleType]:
    """PaddleClas's transform modules: the wheel's deploy transforms and, with ``source``, ppcls's."""
    _package("paddleclas", wheel / "paddleclas")
    modules = {"deploy": importlib.import_module("paddleclas.deploy.python.preprocess")}
    if source is not None:
        for name in ("ppcls", "ppcls.data", "ppcls.data.preprocess", "ppcls.data.preprocess.ops", "ppcls.utils"):
            _package(name, source.joinpath(*name.split(".")))
        modules["ppcls"] = importlib.import_module("ppcls.data.preprocess.ops.operators")
    return modules


def crop_of(ops: types.ModuleType, settings: dict, data: bytes) -> np.ndarray:
    image = ops.DecodeImage(to_rgb=settings["to_rgb"], channel_first=False)(data)
    image = ops.ResizeImage(**settings["resize"])(image)
    return np.ascontiguousarray(ops.CropImage(size=settings["crop"])(image))


def check_normalize(ops: types.ModuleType, settings: dict, crop: np.ndarray, where: str) -> None:
    """PaddleClas's NormalizeImage + ToCHWImage equal the documented formula, bit for bit."""
    theirs = ops.ToCHWImage()(ops.NormalizeImage(scale="1.0/255.0", mean=settings["mean"], std=settings["std"],
                                                 order="")(crop))
    mean = np.asarray(settings["mean"], np.float32)
    std = np.asarray(settings["std"], np.float32)
    formula = ((crop.astype(np.float32) * np.float32(1.0 / 255.0) - mean) / std).transpose(2, 0, 1)
    if theirs.dtype != np.float32 or not np.array_equal(theirs, formula):
        raise SystemExit(f"{where}: NormalizeImage differs from the formula by {np.abs(theirs - formula).max()}")


def encode(crop: np.ndarray) -> np.ndarray:
    """Lossless WebP bytes of an HWC uint8 crop, as a uint8 array (npz holds arrays)."""
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, "WEBP", lossless=True, quality=100, method=6)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def stored(crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the reference files hold for one image's crops: MobileViT/infer as a difference from MobileViT/eval."""
    residual = crops["MobileViT/infer"].astype(np.int16) - crops["MobileViT/eval"][:, :, ::-1]
    if np.abs(residual).max() > 127:
        raise SystemExit("MobileViT/infer is too far from MobileViT/eval to store as a difference")
    return {**crops, "MobileViT/infer": (residual + 128).astype(np.uint8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, required=True, help="the unpacked paddleclas-2.6.0 wheel")
    parser.add_argument("--source", type=Path, help="a PaddleClas git checkout at the release/2.6 commit")
    args = parser.parse_args()
    import cv2

    modules = load_transforms(args.wheel, args.source)
    images = make_images()
    arrays, listed = {}, []
    for path in images:
        crops = {}
        data = path.read_bytes()
        name = path.relative_to(ROOT).as_posix()
        listed.append(name)
        for pipeline, settings in PIPELINES.items():
            results = {k: crop_of(m, settings, data) for k, m in modules.items()}
            first = results["deploy"]
            for kind, crop in results.items():
                if not np.array_equal(crop, first):
                    raise SystemExit(f"{name} {pipeline}: {kind} transforms differ from deploy's")
                check_normalize(modules[kind], settings, crop, f"{name} {pipeline} ({kind})")
            crops[pipeline] = first
        arrays.update({f"{pipeline}|{name}": encode(crop) for pipeline, crop in stored(crops).items()})
    meta = {"paddleclas": "2.6.0", "transforms": sorted(modules), "numpy": np.__version__,
            "opencv": cv2.__version__, "pillow": Image.__version__, "images": listed,
            "pipelines": PIPELINES, "encoding": "webp-lossless; MobileViT/infer: infer - eval[..., ::-1] + 128"}
    save_reference(meta, arrays)
    print(f"{len(arrays)} crops of {len(images)} images written to {HERE}/reference*")


def save_reference(meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """One npz per pipeline (each file stays well under 2 MiB) beside reference.json with the metadata."""
    (HERE / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
    for pipeline in meta["pipelines"]:
        mine = {key.split("|", 1)[1]: value for key, value in arrays.items() if key.startswith(pipeline + "|")}
        np.savez(HERE / reference_file(pipeline), **mine)


def reference_file(pipeline: str) -> str:
    """``LeViT/eval`` -> ``reference-levit-eval.npz``."""
    return "reference-" + pipeline.lower().replace("/", "-") + ".npz"


if __name__ == "__main__":
    main()
