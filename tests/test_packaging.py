"""The extras: one GPU install command that cannot bring CPU onnxruntime, and TensorRT kept on 10.x."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def closure(extra: str) -> list[str]:
    """Every requirement an extra installs, expanding the project's own extras (paddle-onnx-bench[a,b])."""
    found = []
    for requirement in EXTRAS[extra]:
        own = re.fullmatch(rf"{PROJECT['name']}\[(.+)\]", requirement)
        if own:
            for name in own.group(1).split(","):
                found += closure(name.strip())
        else:
            found.append(requirement)
    return found


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_no_extra_installs_both_onnxruntime_packages(extra):
    names = {requirement_name(r) for r in closure(extra)}
    assert not {"onnxruntime", "onnxruntime-gpu"} <= names, f"{extra} installs both onnxruntime packages"


def test_the_gpu_extra_is_the_one_command():
    names = {requirement_name(r) for r in closure("gpu")}
    assert {"onnxruntime-gpu", "tensorrt-cu13", "cuda-python", "paddlepaddle", "paddle2onnx", "openvino",
            "pytest"} <= names
    assert "onnxruntime" not in names
    ort_gpu = next(r for r in closure("gpu") if requirement_name(r) == "onnxruntime-gpu")
    assert "[cuda,cudnn]" in ort_gpu  # without them the provider libraries cannot load cuBLAS/cuDNN


def test_cpu_extras_keep_cpu_onnxruntime():
    assert "onnxruntime" in {requirement_name(r) for r in closure("all")}


def test_tensorrt_stays_on_10():
    tensorrt = next(r for r in closure("trt") if requirement_name(r).startswith("tensorrt"))
    assert "<11" in tensorrt and ">=10" in tensorrt


@pytest.mark.parametrize("extra", ["all", "gpu"])
def test_the_machine_extras_bring_ray_for_a_cluster_sweep(extra):
    ray = [r for r in closure(extra) if requirement_name(r) == "ray"]
    assert ray == ["ray[client]==2.60.0"]  # pinned; the client serves ray://HOST:PORT addresses
