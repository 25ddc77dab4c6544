"""Why int8 top-1 agreement is low on ``seeded-calibrated`` weights: how far apart the top two logits are, against
how far int8 moves them.

For each model it reads the fp32 export's Paddle logits for the 44 evaluation images (``reference.npz``), runs
the int8 models already built beside it (``-int8-ort``, ``-int8-ov``) on the same images, and prints:
the median top-1/top-2 margin and the logits' spread (std over classes), the int8 error, the agreement, and
the margins of the images whose top-1 flipped against those that kept it. An image flips when int8 moves
its logits by more than its margin: agreement is limited by margins as much as by the quantizer.

Build the models first, e.g. ``python -m export --model LeViT_128S --weights seeded-calibrated --opset 17
--precision int8 --runtime ort`` (and ``--runtime ov``); then

    python benchmarks/int8_margins.py --model LeViT_128S MobileViT_XXS [--weights seeded-calibrated]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.logits import Logits
from core.manifest import MANIFEST_NAME, load_manifest
from export.quantize.accuracy import derived_logits
from export.quantize.build import evaluation_inputs

VARIANTS = (("int8-ort", "onnx", "model.onnx"), ("int8-ov", "openvino-ir", "model.xml"))


def margins(logits: np.ndarray) -> np.ndarray:
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]


def report(model: str, fp32_dir: Path) -> list[str]:
    fp32 = load_manifest(fp32_dir / MANIFEST_NAME)
    reference = Logits.load(fp32_dir / fp32.reference["images"]["file"])[0].values
    margin = margins(reference)
    lines = [f"{model} ({fp32_dir.parent.name} weights): {len(reference)} images, top-1/top-2 margin median "
             f"{np.median(margin):.3f} (min {margin.min():.3f}), logit std over classes median "
             f"{np.median(reference.std(axis=1)):.3f}"]
    images = evaluation_inputs(fp32)["images"]
    for variant, model_format, name in VARIANTS:
        path = fp32_dir.with_name(f"{fp32_dir.name}-{variant}") / name
        if not path.is_file():
            lines.append(f"  {variant}: not built ({path})")
            continue
        control = (load_manifest(path.parent / MANIFEST_NAME).reduced_precision or {}).get("accuracy_control")
        variant += f" (--max-drop {control['max_drop']})" if control else ""
        logits = derived_logits(path, model_format, images, fp32.batch)
        error, flipped = np.abs(logits - reference), logits.argmax(1) != reference.argmax(1)
        moved = np.median(margin[flipped]) if flipped.any() else float("nan")
        lines.append(f"  {variant}: agreement {1 - flipped.mean():.3f}, mean |error| {error.mean():.3f}, "
                     f"median per-image max |error| {np.median(error.max(axis=1)):.3f}; margin median of the "
                     f"flipped images {moved:.3f}, of the kept ones {np.median(margin[~flipped]):.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--weights", default="seeded-calibrated")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    for model in args.model:
        fp32_dir = args.artifacts / model / args.weights / f"opset{args.opset}-bdyn"
        if not (fp32_dir / MANIFEST_NAME).is_file():
            print(f"error: no fp32 export at {fp32_dir}; run python -m export --model {model} "
                  f"--weights {args.weights} --opset {args.opset}", file=sys.stderr)
            return 1
        print("\n".join(report(model, fp32_dir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
