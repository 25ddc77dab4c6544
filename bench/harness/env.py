"""Environment capture for every record: host, CPU, memory, GPU, package versions, git state.

Nothing here may fail a benchmark: every probe falls back to ``None``. Package versions come from
``importlib.metadata`` so that capturing them never imports (and initialises) a runtime.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from core.cores import usable_cpus
from core.cpu import CPU_FLAGS
from core.manifest import package_versions as _package_versions

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("paddlepaddle", "paddlepaddle-gpu", "paddle2onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
            "openvino", "tensorrt", "numpy")
ENV_VARS = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "OV_CPU_THREADS_NUM", "GLOG_minloglevel",
            "NVIDIA_TF32_OVERRIDE")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    return _package_versions(names)


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """Model, logical/physical cores and the flags that change OpenVINO/ORT precision behaviour."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model = None
    family_model: dict[str, int] = {}  # "AMD EPYC" names no generation in a VM; CPUID's family/model do
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = None
    for line in cpuinfo.splitlines() + [""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key in ("cpu family", "model") and key not in family_model and value.isdigit():
            family_model[key] = int(value)
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif not key:  # blank line ends one processor block
            if core_id is not None:
                cores.add((physical_id or "0", core_id))
            physical_id = core_id = None
    return {
        "model": model or platform.processor() or None,
        "family": family_model.get("cpu family"),
        "model_number": family_model.get("model"),
        "logical_cores": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "usable_cores": len(usable_cpus()),  # what this process may run on (taskset/cgroup)
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "governor": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
    }


def cpu_name(cpu: dict) -> str | None:
    """The model name, with CPUID's family and model when known (a VM's "AMD EPYC" names no generation)."""
    if cpu.get("family") is None:
        return cpu.get("model")
    return f"{cpu.get('model')} (family {cpu['family']}, model {cpu.get('model_number')})"


def cores_line(cpu: dict) -> str:
    """``AMD EPYC (family 25, model 17), 2 logical / 2 physical cores``: the benchmarks' machine line."""
    return f"{cpu_name(cpu)}, {cpu['logical_cores']} logical / {cpu['physical_cores']} physical cores"


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_info() -> list[dict[str, Any]]:
    """GPUs as nvidia-smi sees them; an empty list without nvidia-smi or a driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit"
    try:
        out = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 6:
            name, driver, memory, sm, sm_max, power = parts
            gpus.append({"name": name, "driver": driver, "memory_mib": _number(memory),
                         "sm_clock_mhz": _number(sm), "sm_clock_max_mhz": _number(sm_max),
                         "power_limit_w": _number(power)})
    return gpus


def git_info(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the code runs from (``None`` outside git or before a commit)."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


@functools.lru_cache(maxsize=1)
def capture_environment() -> dict[str, Any]:
    """The whole environment block; cached because it does not change within a process."""
    return {
        "host": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "memory_gib": memory_total_gib(),
        "gpus": gpu_info(),
        "packages": package_versions(),
        "env_vars": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
