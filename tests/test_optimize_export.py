"""The optimisation stage on a real export: LeViT_128S through paddle2onnx at opsets 17 and 13 with the default
passes keeps parity with Paddle and leaves no BatchNormalization or Identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from core.manifest import load_manifest
from export.optimize.levels import PORTABLE_PASSES
from export.pipeline import run_export
from export.request import ExportRequest


@pytest.mark.slow
@pytest.mark.parametrize("opset", [17, 13])
def test_levit_exports_optimised_with_parity_and_no_batchnorm(tmp_path, opset):
    manifest_path = run_export(ExportRequest("LeViT_128S", opset, root=tmp_path)).manifest_path
    manifest = load_manifest(manifest_path)
    optimization = manifest.optimization
    assert optimization["level"] == "portable"
    assert [p["pass"] for p in optimization["passes"]] == list(PORTABLE_PASSES)
    assert all(p["max_abs_change"] <= p["change_limit"] for p in optimization["passes"])
    assert all(p["max_abs_change"] <= 1e-5 for p in optimization["passes"])  # seeded logits are below 1
    folded = next(p for p in optimization["passes"] if p["pass"] == "fold_batchnorm")
    assert folded["op_delta"]["BatchNormalization"] == -51, folded  # 46 behind a Reshape, 4 after Conv, the head
    assert optimization["nodes_after"] == manifest.graph.node_count < optimization["nodes_before"]

    census = manifest.graph.op_census
    assert "BatchNormalization" not in census and "Identity" not in census, census
    model = onnx.load(str(manifest_path.parent / manifest.graph.file))
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert manifest.opset_written == opset

    for kind in ("seeded", "images"):
        figures = manifest.parity[kind]
        assert figures["passed"] and figures["top1_agreement"] == 1.0, figures
        assert figures["max_abs_diff"] <= 1e-4
    assert manifest.parity["images"]["n"] == 44
    assert np.isfinite(manifest.parity["seeded"]["max_abs_diff"])
    stale_export_is_not_reused(tmp_path, opset, manifest_path)


def stale_export_is_not_reused(root: Path, opset: int, manifest_path: Path) -> None:
    """bench reuses an export only when it is what `python -m export` would make now (its cache key)."""
    from dataclasses import replace

    from bench.cli import cmd_run
    from bench.launcher import ExportSpec
    from core.manifest import save_manifest

    spec = ExportSpec("LeViT_128S", opset, "dynamic", "seeded", root)
    assert spec.ready()
    # as if made by older code or another paddle2onnx: the key the export compares differs
    save_manifest(manifest_path, replace(load_manifest(manifest_path), cache_key="made-by-an-older-version"))
    assert spec.exists() and not spec.ready()
    results = root / "runs.jsonl"
    code = cmd_run(["--runtime", "null", "--model", "LeViT_128S", "--opset", str(opset), "--artifacts", str(root),
                    "--no-export", "--results", str(results), "--iterations", "2", "--warmup", "0"])
    assert code == 1
    (line,) = results.read_text().splitlines()
    assert "was made by other code, package versions or inputs than these" in line and "python -m export" in line


@pytest.mark.slow
def test_graph_speedup_script_writes_its_table(tmp_path):
    """The committed benchmark runs end to end at tiny settings (both exports made on demand)."""
    import subprocess
    import sys

    out = tmp_path / "results" / "graph_speedup.md"
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "graph_speedup.py"),
                           "--model", "MobileViT_XXS", "--runtimes", "ort", "--batches", "1", "8", "--rounds", "1",
                           "--runs", "1", "--peak-n", "64", "--artifacts", str(tmp_path / "art"), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "MobileViT_XXS" in text and "GFLOP/s" in text and "Machine:" in text
    import json

    (flops,) = json.loads(out.with_suffix(".json").read_text())["flops"]
    assert flops["peak_used"] == max(flops["peak"].values()) and f"Peak used: {flops['peak_used']:.1f}" in text
    at_peak_ms = flops["gflop"] / flops["peak_used"] * 1e3
    assert flops["at_peak_ms"] == pytest.approx(at_peak_ms)
    base_ms = next(r["base_ms"] for r in json.loads(out.with_suffix(".json").read_text())["ratios"] if r["batch"] == 8)
    assert flops["floor"] == {"ort": pytest.approx(at_peak_ms / base_ms)}
    assert f"ort {flops['floor']['ort']:.2f} |" in text
    assert (tmp_path / "art" / "MobileViT_XXS" / "seeded" / "opset17-bdyn-opt-none").is_dir()
    # the targets beside their figures: MobileViT's share of the peak, and Paddle against the best configuration
    assert flops["verdict"].startswith(">= 70%: ") and f"| {flops['verdict']} |" in text
    (paddle,) = json.loads(out.with_suffix(".json").read_text())["paddle"]
    assert paddle["paddle_effective"] == {"onednn": True, "ir_optim": True, "threads": paddle["paddle_effective"][
        "threads"]} and paddle["best"] in ("ort none", "ort portable")
    assert paddle["verdict"].startswith("target >= 6x: ") and "## Paddle Inference fp32 against the best" in text
    # the ceiling at the CPU's FMA peak, from the probe built with this machine's C compiler (when it has one)
    fma = json.loads(out.with_suffix(".json").read_text())["machine"]["fma_peak"]
    if fma is None:
        assert "FMA peak: not measured (" in proc.stdout
    else:
        per_image_ms = flops["gflop"] / 8 / fma["gflops"] * 1e3
        assert paddle["fma_ceiling"] == pytest.approx(paddle["paddle_ms"] / per_image_ms)
        assert f"{paddle['fma_ceiling']:.1f}x at {per_image_ms:.2f} ms at the FMA peak" in text
