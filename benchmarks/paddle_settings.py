"""Is Paddle Inference at its best as the benchmark runs it? Its CPU settings timed against one another.

``runtimes/paddle.py`` runs Paddle Inference with oneDNN on, IR optimisation on and ``threads`` math threads.
This script times that configuration against the alternatives Paddle 3's ``inference.Config`` offers on a CPU
(oneDNN off, IR optimisation off, each PIR optimisation level, oneDNN's FC passes off), each a predictor of its
own on the export's Paddle model, in interleaved rounds in one process (a pause, one untimed run, then ``--runs``
timed runs per turn; order rotated each round). It prints the median over rounds of each one's fastest run per
round and its ratio to the benchmark's configuration: a ratio below 1 (beyond the rounds' range) would mean the
benchmark does not run Paddle at its best.

    python benchmarks/paddle_settings.py [--model MobileViT_XXS LeViT_128S] [--batch 1] [--rounds 9] [--runs 5]
        [--threads N] [--artifacts DIR] [--out results/paddle_settings.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# Run from a checkout: make the repo importable even when the editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from graph_speedup import time_interleaved

from bench.harness.env import cpu_info, package_versions
from bench.launcher import ExportSpec, launch_export
from core.artifact import Artifact
from core.cores import default_threads
from core.cpu import cpu_flags, describe
from core.files import write_text_atomic

BENCH = "bench (oneDNN, IR optim)"
# name -> (oneDNN, IR optimisation, PIR optimisation level or None for Paddle's default, oneDNN FC passes)
SETTINGS = {
    BENCH: (True, True, None, True),
    "oneDNN off": (False, True, None, True),
    "IR optim off": (True, False, None, True),
    "level 3": (True, True, 3, True),
    "level 1": (True, True, 1, True),
    "oneDNN FC passes off": (True, True, None, False),
}


def predictor(files: tuple[Path, Path], setting: tuple, threads: int, x: np.ndarray):
    """A Paddle predictor with ``setting``, its input copied in: calling ``.run()`` runs one inference."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        from paddle import inference
    onednn, ir_optim, level, fc_passes = setting
    config = inference.Config(str(files[0]), str(files[1]))
    config.disable_gpu()
    config.switch_ir_optim(ir_optim)
    if onednn:
        config.enable_onednn()
    else:
        config.disable_onednn()
    if level is not None:
        config.set_optimization_level(level)
    if not fc_passes:
        config.disable_onednn_fc_passes()
    config.set_cpu_math_library_num_threads(threads)
    config.disable_glog_info()
    made = inference.create_predictor(config)
    handle = made.get_input_handle(made.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    return made


def model_rows(model: str, args: argparse.Namespace) -> list[str]:
    artifact = Artifact.from_manifest(launch_export(ExportSpec(model, args.opset, "dynamic", "seeded",
                                                               args.artifacts)))
    x = np.random.default_rng(1).standard_normal((args.batch, *artifact.input_shape[1:])).astype(np.float32)
    made = {name: predictor(artifact.paddle_files, setting, args.threads, x) for name, setting in SETTINGS.items()}
    best = time_interleaved(made, args.rounds, args.runs)
    rows = [f"### {model}, batch {args.batch}", "", "| setting | ms (median of rounds) | vs bench | per-round range |",
            "|---|---:|---:|---|"]
    for name, times in best.items():
        ratios = [t / b for t, b in zip(times, best[BENCH], strict=True)]
        rows.append(f"| {name} | {statistics.median(times):.2f} | {statistics.median(ratios):.2f}x | "
                    f"{min(ratios):.2f}..{max(ratios):.2f} |")
    return rows + [""]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["MobileViT_XXS", "LeViT_128S"])
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=default_threads(), help="default: physical cores")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--out", type=Path, default=Path("results/paddle_settings.md"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.runs < 1 or args.batch < 1:
        parser.error("--rounds, --runs and --batch must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    versions = package_versions(("paddlepaddle",))
    lines = ["# Paddle Inference CPU settings against the benchmark's (benchmarks/paddle_settings.py)", "",
             f"- command: `python {' '.join(sys.argv)}`",
             f"- machine: {cpu_info()['model']}; {describe(cpu_flags())}; {args.threads} threads",
             f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}",
             f"- {args.rounds} interleaved rounds x {args.runs} runs; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    print("\n".join(lines), flush=True)
    for model in args.model:
        rows = model_rows(model, args)
        print("\n".join(rows), flush=True)
        lines += rows
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
