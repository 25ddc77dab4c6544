"""Make reference.npz: what PaddleClas 2.6.0's own classes make of the configs in this folder, for
tests/test_paddleclas_config.py to compare ``core.preprocess.from_config`` with.

Run it in a throwaway environment holding PaddleClas 2.6.0's pins (never in this project's venv, whose numpy 2
that OpenCV build cannot load), from the repository root, with a PaddleClas git checkout at the release/2.6
commit (d6892e564; its training transforms are not in the wheel):

    python3.11 -m venv /tmp/ppcls-env
    /tmp/ppcls-env/bin/pip install numpy==1.24.4 opencv-python==4.6.0.66 pillow==13.0.0 paddlepaddle==3.3.1 \
        six==1.17.0 pyyaml==6.0.2
    /tmp/ppcls-env/bin/python tests/data/paddleclas/make_reference.py --source /path/to/PaddleClas

Each config section runs as PaddleClas runs it:
- ``DataLoader.Eval.dataset.transform_ops``: the file's bytes through the ops, then the data set's
  ``img.transpose((2, 0, 1))`` (``ppcls/data/dataloader/common_dataset.py``);
- ``Infer.transforms``: the file's bytes through the ops (``ppcls/engine/engine.py``, ``infer``);
- ``PreProcess.transform_ops``: ``cv2.imread(path)[:, :, ::-1]`` through the deploy ops
  (``deploy/python/predict_cls.py``, ``deploy/python/preprocess.py``).

It writes ``reference.npz`` (one float32 CHW tensor per ``<config>:<pipeline>|<image>``) and ``reference.json``
(what made it), over 8 of tests/data/preprocess's images: a grayscale JPEG, a PNG with alpha, a CMYK JPEG, one
smaller than the crops, a 7:1 panorama, an EXIF-rotated JPEG and two ImageNet validation images.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
IMAGES = [*(f"tests/data/preprocess/images/{name}" for name in ("gray.jpg", "alpha.png", "cmyk.jpg", "tiny.jpg",
                                                                "panorama.jpg", "exif_rotated.jpg")),
          "data/imagenet-val-44/images/ILSVRC2012_val_00000001.JPEG",
          "data/imagenet-val-44/images/ILSVRC2012_val_00000009.JPEG"]
# config file -> (pipeline, section) pairs to run
SECTIONS = {
    "TinyLCNet.yaml": [("eval", "DataLoader.Eval.dataset.transform_ops"), ("infer", "Infer.transforms")],
    "inference_tiny.yaml": [("infer", "PreProcess.transform_ops")],
    "more_ops.yaml": [("eval", "DataLoader.Eval.dataset.transform_ops"), ("infer", "Infer.transforms")],
}


def _package(name: str, path: Path) -> None:
    """Register ``name`` as a package at ``path`` without running its __init__ (which imports the world)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def load_operators(source: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """(ppcls's training/eval transform module, deploy's transform module) of a PaddleClas checkout."""
    for name in ("ppcls", "ppcls.data", "ppcls.data.preprocess", "ppcls.data.preprocess.ops", "ppcls.utils"):
        _package(name, source.joinpath(*name.split(".")))
    for name, folder in (("paddleclas", source), ("paddleclas.deploy", source / "deploy"),
                         ("paddleclas.deploy.python", source / "deploy" / "python")):
        _package(name, folder)
    return (importlib.import_module("ppcls.data.preprocess.ops.operators"),
            importlib.import_module("paddleclas.deploy.python.preprocess"))


def create_operators(module: types.ModuleType, params: list) -> list:
    """PaddleClas's create_operators: one op per ``{name: arguments}``, looked up by name."""
    ops = []
    for operator in params:
        (name, arguments), = operator.items()
        ops.append(getattr(module, name)(**(arguments or {})))
    return ops


def run(section: str, ops: list, path: Path) -> np.ndarray:
    import cv2

    if section == "PreProcess.transform_ops":
        data = cv2.imread(str(path))[:, :, ::-1]
    else:
        data = path.read_bytes()
    for op in ops:
        data = op(data)
    if section.startswith("DataLoader"):
        data = data.transpose((2, 0, 1))
    return np.ascontiguousarray(data, dtype=np.float32)


def lookup(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def main() -> None:
    import cv2
    import yaml
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="a PaddleClas git checkout at release/2.6")
    args = parser.parse_args()
    ppcls, deploy = load_operators(args.source)
    arrays = {}
    for config, sections in SECTIONS.items():
        data = yaml.safe_load((HERE / config).read_text())
        for pipeline, section in sections:
            module = deploy if section == "PreProcess.transform_ops" else ppcls
            ops = create_operators(module, lookup(data, section))
            for image in IMAGES:
                arrays[f"{config}:{pipeline}|{image}"] = run(section, ops, ROOT / image)
    np.savez_compressed(HERE / "reference.npz", **arrays)
    meta = {"paddleclas": "2.6.0 (d6892e564)", "numpy": np.__version__, "opencv": cv2.__version__,
            "pillow": Image.__version__, "images": IMAGES, "sections": SECTIONS}
    (HERE / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(arrays)} tensors written to {HERE / 'reference.npz'}")


if __name__ == "__main__":
    main()
