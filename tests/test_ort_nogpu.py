"""onnxruntime-gpu on a machine without a usable GPU: what a user must see.

Runs only where the onnxruntime-gpu distribution is installed (a `pip install -e '.[gpu]'` environment) and
no GPU is usable; elsewhere it skips, saying which. Every GPU request must end in one clear error naming the
missing piece (driver, CUDA wheels, TensorRT, two onnxruntime packages); ORT must never print its fallback
banner, and nothing may run on CPU while the record says CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import run_module
from fake_driver import build_fake_libcuda

try:
    GPU_BUILD = metadata.version("onnxruntime-gpu")
except metadata.PackageNotFoundError:
    GPU_BUILD = None
if GPU_BUILD is None:
    pytest.skip("onnxruntime-gpu is not installed (CPU onnxruntime here): these tests check the GPU build on a "
                "machine without a usable GPU; run them in a `pip install -e '.[gpu]'` environment",
                allow_module_level=True)

import onnxruntime as ort

from core.artifact import Artifact
from runtimes.base import RuntimeOptions, RuntimeUnavailable, SilentChangeError
from runtimes.ort import OrtRuntime
from runtimes.ort_gpu import create_session, nvidia_lib_dirs, ort_distributions, provider_status
from runtimes.ort_placement import CPU, CUDA, TENSORRT

if provider_status(CUDA).usable:
    pytest.skip("a usable CUDA GPU is here: these tests check its absence (tests/test_gpu.py covers the GPU)",
                allow_module_level=True)

# What the missing piece can be here; a reason naming none of them is not a clear error.
CAUSES = ("libcuda.so.1", "libcublas", "libnvinfer", "overwrite each other's files", "sees no GPU",
          "update the driver", "not in this onnxruntime build")
CLASH = len(ort_distributions()) > 1


def child_env() -> dict[str, str]:
    """The child sees the same packages and libraries as this process."""
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    if "LD_LIBRARY_PATH" in os.environ:
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def test_compiled_in_is_not_usable():
    for provider in (CUDA, TENSORRT):
        status = provider_status(provider)
        assert not status.usable
        assert any(cause in status.reason for cause in CAUSES), status.reason
        assert "\n" not in status.reason


def test_bench_list_says_why_the_gpu_providers_are_unusable(tmp_path):
    listed = run_module("bench", "list", "ort", cwd=tmp_path, env=child_env())
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:2] == ["ort", "available"]  # the CPU provider still runs
    for key, provider in (("cuda", CUDA), ("tensorrt", TENSORRT)):
        line = next(line for line in lines if f"{provider} unusable: " in line)
        assert f"--device cuda{'' if key == 'cuda' else ' --option provider=tensorrt'}:" in line
        assert provider_status(provider).reason.split(": ", 1)[-1] in line
    as_json = json.loads(run_module("bench", "list", "--json", cwd=tmp_path, env=child_env()).stdout)
    ort_entry = next(entry for entry in as_json if entry["name"] == "ort")
    assert len(ort_entry["notes"]) == 2 and all("unusable" in note for note in ort_entry["notes"])


@pytest.mark.parametrize("option", [[], ["--option", "provider=tensorrt"]])
def test_device_cuda_is_one_error_line(onnx_artifact, tmp_path, option):
    results = tmp_path / "runs.jsonl"
    child = run_module("bench", "--runtime", "ort", "--manifest", str(onnx_artifact), "--device", "cuda",
                       *option, "--results", str(results), cwd=tmp_path, env=child_env())
    assert child.returncode == 1
    assert child.stdout == ""  # no table, no ORT banner
    (line,) = child.stderr.splitlines()
    assert line.startswith("error: runtime 'ort' is not available: ")
    assert any(cause in line for cause in CAUSES), line
    (record,) = [json.loads(r) for r in results.read_text().splitlines()]
    assert record["status"] == "error" and record["error"]["message"] in line


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_load_is_one_runtime_unavailable(onnx_artifact, capfd, provider, strict):
    rt = OrtRuntime(RuntimeOptions(device="cuda", extra={"provider": provider, "strict_placement": strict}))
    with rt, pytest.raises(RuntimeUnavailable) as info:
        rt.load(Artifact.from_manifest(onnx_artifact))
    assert any(cause in str(info.value) for cause in CAUSES)
    out, err = capfd.readouterr()
    assert out == "" and "Falling back" not in err and "EP Error" not in err


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("provider", [CUDA, TENSORRT])
def test_the_session_never_falls_back(onnx_artifact, capfd, provider, strict):
    """Past the probe, ORT's own behaviour: a CPU-only session or a raw error, both turned into one line."""
    artifact = Artifact.from_manifest(onnx_artifact)
    with pytest.raises((RuntimeUnavailable, SilentChangeError)) as info:
        create_session(ort, str(artifact.onnx_path), ort.SessionOptions(), provider, 0, tf32=False,
                       strict=strict)
    message = str(info.value)
    assert any(cause in message for cause in CAUSES), message
    assert "InvalidArgument" not in message and "cannot run every node" not in message
    assert "Falling back" not in capfd.readouterr().out


def test_plain_ort_retries_on_cpu_with_a_banner(onnx_artifact, capfd):
    """Why the session is created with enable_fallback=0: ORT's own wrapper, asked for TensorRT, prints a banner
    and hands back a CPU-only session."""
    if TENSORRT not in ort.get_available_providers():
        pytest.skip("the TensorRT provider is not compiled into the onnxruntime that won the package clash")
    session = ort.InferenceSession(str(Artifact.from_manifest(onnx_artifact).onnx_path),
                                   providers=[TENSORRT, CUDA, CPU])
    assert session.get_providers() == [CPU]
    assert "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider']" in capfd.readouterr().out


def test_with_a_driver_the_probe_reaches_the_libraries(tmp_path):
    """With a (stand-in) driver and one GPU, the probe must get past the driver to the provider libraries:
    usable when the CUDA wheels are installed, else it names cuBLAS. It must never refuse a working machine."""
    if CLASH:
        pytest.skip("two onnxruntime packages here: the probe stops at the clash before the driver")
    build_fake_libcuda(tmp_path)
    env = child_env()
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("LD_LIBRARY_PATH")) if p)
    code = ("import json; from runtimes.ort_gpu import provider_status; s = provider_status('CUDAExecutionProvider'); "
            "print(json.dumps([s.usable, s.reason, s.detail]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, timeout=120)
    usable, reason, detail = json.loads(result.stdout)
    assert detail["gpu"] == "Stand-in GPU" and "driver" not in reason
    folders = nvidia_lib_dirs()
    if folders["cuda"] and folders["cudnn"]:
        assert usable, reason
    else:
        assert not usable and "cuBLAS 13 not found" in reason, reason
