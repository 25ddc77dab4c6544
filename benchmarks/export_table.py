"""Write the export table (model x opset: nodes, parity, export seconds) from the manifests in artifacts/.

python -m export --model LeViT_128S ... MobileViT_S --opset 13 14 17   # exports (or cache hits)
python benchmarks/export_table.py [--artifacts artifacts] [--out results/export_parity.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import write_text_atomic  # noqa: E402
from export.models import MODELS  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def rows(artifacts: Path, opsets: list[int]) -> list[str]:
    lines = [
        "| model | opset asked | opset written | nodes | after folding | before folding | BatchNorm left "
        "| largest change of a pass | max abs diff (4 seeded) "
        "| max abs diff (44 images) | min cosine (44 images) | top-1 agreement (seeded + images) "
        "| export s |",
        "|" + "---|" * 13,
    ]
    for model in MODELS:
        for opset in opsets:
            path = artifacts / model / "seeded" / f"opset{opset}-bdyn" / "model.onnx.json"
            if not path.is_file():
                lines.append(f"| {model} | {opset} | missing |" + " |" * 10)
                continue
            m = json.loads(path.read_text())
            seeded, images = m["parity"]["seeded"], m["parity"]["images"]
            optimization = m.get("optimization") or {}
            passes = optimization.get("passes") or []
            moved = max((p.get("max_abs_change") or 0.0 for p in passes), default=0.0)
            left = (m.get("op_census") or m["graph"].get("op_census") or {}).get("BatchNormalization", 0)
            agreement = (f"{seeded['top1_agreement']:.0%} of {seeded['n']} + "
                         f"{images['top1_agreement']:.0%} of {images['n']}")
            lines.append(
                f"| {model} | {m['opset_requested']} | {m['opset_written']} "
                f"| {m['graph']['node_count']} | {optimization.get('nodes_before', '')} "
                f"| {m['graph']['node_count_before_folding']} | {left} | {moved:.1e} | {seeded['max_abs_diff']:.2e} "
                f"| {images['max_abs_diff']:.2e} | {images['cosine_min']:.7f} | {agreement} "
                f"| {m['export_seconds']:.1f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "export_parity.md")
    parser.add_argument("--opsets", type=int, nargs="+", default=[13, 14, 17])
    args = parser.parse_args()
    any_manifest = next(args.artifacts.rglob("model.onnx.json"))
    versions = json.loads(any_manifest.read_text())["versions"]
    command = (f"python -m export --model {' '.join(MODELS)} --opset {' '.join(map(str, args.opsets))}"
               " && python benchmarks/export_table.py")
    header = f"""# Export parity: every zoo model x opset

Seeded weights (`--weights seeded`, the parity recipe), dynamic batch. Parity is Paddle (dygraph, eval,
FP32) against ONNX Runtime CPU on 4 seeded N(0,1) inputs and the 44 ImageNet validation images in
`data/imagenet-val-44`; an export fails unless max abs diff <= 1e-4 x max(1, largest |logit|) and top-1
agreement is 100 %. Graph passes at the default level (`portable`): "after folding" is the node count before
them, "BatchNorm left" what remains after them, "largest change of a pass" the largest output change any
single pass made on seeded inputs (ORT, its own optimisations off; a pass over 1e-4 x max(1, |logit|) fails
the export).
Export seconds cover model build, Paddle inference model, paddle2onnx, constant folding, graph passes,
validation and both parity checks (taken while other work shared the 2 cores: indicative only).

Command: `{command}`
Machine: {cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}.
Versions: {", ".join(f"{k} {v}" for k, v in versions.items())}.

"""
    text = header + "\n".join(rows(args.artifacts, args.opsets)) + "\n"
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
