"""``python -m bench explain``: the explain-specific flags, the resolution of what to explain, and the output.

The target flags (``--runtime --model --manifest --opset --precision --threads ...``) are ``python -m bench``'s
own (``bench.cli_common.add_target_arguments``); ``bench.explain_cli`` parses them, validates the request like a
benchmark cell and resolves the model ``python -m bench`` would run (the export, or the int8/fp16 model derived
from it, made on demand unless ``--no-export``), then hands over here.

    python -m bench explain --runtime ov --manifest artifacts/LeViT_128S/.../int8/model.onnx.json
    python -m bench explain --runtime ort --model LeViT_128S --precision int8 --images 8 --top 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.explain.report import section_lines
from bench.explain.run import ExplainError, ExplainSettings, Target, reference_of, run_explain
from core.artifact import Artifact, ArtifactError
from core.files import write_json_atomic
from core.manifest import ManifestError

DEFAULT_OUT = Path("results/explain")
EXPLAIN_PRECISIONS = {"ort": ("fp32", "fp16", "int8"), "ov": ("fp32", "bf16", "fp16", "int8")}


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("explain")
    e.add_argument("--against", choices=("onnx", "paddle"),
                   help="the reference: paddle (Paddle's own intermediate values of the same model, matched to the "
                        "ONNX tensors by paddle2onnx's names; the default for an fp32 export) or onnx (ORT fp32 on "
                        "the fp32 export; the default for reduced precision)")
    e.add_argument("--images", type=int, default=8, help="images compared layer by layer (default 8)")
    e.add_argument("--top", type=int, default=10, help="layers listed by error growth (default 10)")
    e.add_argument("--threshold", type=float,
                   help="relative error that counts as diverged (default per precision: fp32 1e-4, fp16 2e-2, "
                        "bf16 5e-2, int8 0.2)")
    e.add_argument("--search", choices=("auto", "always", "never"), default="auto",
                   help="search the deployed run with cut models: when the instrumented run differs from it "
                        "(auto, default), always, or never")
    e.add_argument("--no-fix", action="store_true", help="int8: do not re-quantise to try the suggested fix")
    e.add_argument("--calibration", help="int8 fix trials: calibration images, when the manifest records none")
    e.add_argument("--time-limit", type=float, help="stop measuring after this many seconds (default: none)")
    e.add_argument("--out", type=Path, help=f"folder for layers.csv, the plot and explain.json "
                                            f"(default: {DEFAULT_OUT}/<model>-<runtime>-<precision>)")


def check_arguments(args: argparse.Namespace) -> None:
    """Usage errors of the explain flags (ValueError with the message)."""
    if args.images < 1:
        raise ValueError(f"--images must be a positive integer, got {args.images}")
    if args.top < 1:
        raise ValueError(f"--top must be a positive integer, got {args.top}")
    if args.threshold is not None and not args.threshold > 0:
        raise ValueError(f"--threshold must be a positive number, got {args.threshold}")
    allowed = EXPLAIN_PRECISIONS.get(args.runtime)
    if allowed and args.precision is not None and args.precision not in allowed:
        raise ValueError(f"explain on {args.runtime!r} takes --precision {', '.join(allowed)}; got {args.precision!r}")


def settings_from_args(args: argparse.Namespace, gates: dict) -> ExplainSettings:
    return ExplainSettings(images=args.images, top=args.top, threshold=args.threshold, search=args.search,
                           fixes=not args.no_fix, calibration=args.calibration, time_limit_s=args.time_limit,
                           gates=dict(gates))


def resolve_target(runtime: str, precision: str | None, manifest: Path, batch: int, threads: int,
                   against: str | None = None) -> Target:
    """The artifact to explain and its reference; ``precision`` None: the manifest's; ``against`` None: Paddle
    for an fp32 export (ORT fp32 on the export itself would compare the model with itself), else ORT fp32."""
    try:
        artifact = Artifact.from_manifest(manifest, verify=True)
    except (ManifestError, ArtifactError) as exc:
        raise ExplainError(str(exc)) from None
    stored = artifact.precision
    if runtime == "ort" and artifact.format != "onnx":
        raise ExplainError(f"ort runs ONNX files; {artifact.model_path.name} is an {artifact.format} model (use ov)")
    if runtime == "ort" and precision not in (None, stored):
        raise ExplainError(f"ort runs the model file's precision: {artifact.model_path.name} is {stored}, not "
                           f"{precision}")
    if runtime == "ov":
        if stored == "fp16":
            raise ExplainError("an fp16 ONNX file is ORT's; OpenVINO fp16 is a hint on the fp32 export "
                               "(--precision fp16 without --manifest)")
        if stored == "int8" and precision not in (None, "int8"):
            raise ExplainError(f"{artifact.model_path.name} is an int8 model; it runs at int8 (omit --precision)")
        precision = "int8" if stored == "int8" else precision or "fp32"
    reference = reference_of(artifact)
    if against is None:
        against = "paddle" if reference is artifact and artifact.paddle_files is not None else "onnx"
    return Target(runtime, precision or stored, artifact, reference, batch, threads, against=against)


def explain_and_print(target: Target, settings: ExplainSettings, out: Path | None, as_json: bool) -> int:
    """Run the explain, print its lines, write ``explain.json`` beside the CSV and plot."""
    out = out or DEFAULT_OUT / (f"{target.artifact.model}-o{target.reference.opset}-{target.label}"
                                + ("-vs-paddle" if target.against == "paddle" else ""))
    outcome = run_explain(target, settings, out)
    data = outcome.section
    write_json_atomic(out / "explain.json", data)
    print(f"{target.artifact.model}: {target.label} ({target.artifact.model_path.name}) vs "
          f"{target.reference_label}")
    for line in outcome.lines:
        print(line)
    for line in section_lines(data):
        print(line)
    print(f"explain took {data['seconds']['total']:.1f}s for {settings.images} image(s)")
    print(f"wrote {out / 'layers.csv'}, {out / 'error_along_depth.png'}, {out / 'explain.json'}")
    if as_json:
        print("---")
        print(json.dumps(data, indent=1, default=str))
    return 0
