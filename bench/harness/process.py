"""What the cell process used, phase by phase (load, warm-up, timed loop): peak resident memory, CPU time, and
GPU memory through NVML where an NVIDIA GPU is in use.

Peak resident memory per phase. Linux keeps a process's peak resident set (``VmHWM`` in /proc/self/status);
writing ``5`` to /proc/self/clear_refs resets it to the current resident set, so VmHWM read at the end of a
phase is that phase's peak, exactly and at no cost during the phase (method ``clear_refs``). Where the reset
is refused (old kernels, some sandboxes), a background thread samples ``VmRSS`` every ``SAMPLE_MS`` (method
``sampled``): a peak shorter than the interval can be missed, and the thread wakes during the timed loop,
which the record says. Without /proc (macOS, Windows) no memory is recorded (method ``unavailable``). The
environment variable ``PADDLE_ONNX_BENCH_MEMORY_METHOD=sampled`` forces sampling (to compare the two).

CPU: user + system time of the whole process (every thread) over a phase, divided by its wall time, is how
many cores the process kept busy: the throughput scenario's proof that its requests really overlapped.

GPU memory: NVML (the ``nvidia-ml-py`` package, imported only when a GPU device is asked) has no peak, so
the memory this process holds on each GPU (else the device's used memory, which counts other processes too)
is read at the end of each phase; the method says which.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLE_MS = 5.0
METHODS = ("clear_refs", "sampled", "unavailable")
METHOD_ENV = "PADDLE_ONNX_BENCH_MEMORY_METHOD"
_MIB = 1024 * 1024


def read_status_kib(path: Path = STATUS) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a process's ``/proc/<pid>/status``."""
    text = path.read_text()
    return {key: int(m.group(1)) for key in ("VmRSS", "VmHWM") if (m := re.search(rf"^{key}:\s+(\d+) kB", text, re.M))}


def _own_status() -> dict[str, int]:
    """This process's VmRSS/VmHWM; empty (figures read as None) if /proc cannot be read: never fails a run."""
    try:
        return read_status_kib()
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", STATUS, exc)
        return {}


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current resident set; False where the kernel refuses."""
    try:
        with CLEAR_REFS.open("w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def detect_method() -> str:
    """clear_refs where the kernel lets this process reset its peak, else sampled; ``$METHOD_ENV=sampled``
    forces sampling."""
    if not STATUS.is_file():
        return "unavailable"
    if os.environ.get(METHOD_ENV) == "sampled":
        return "sampled"
    return "clear_refs" if reset_peak() else "sampled"


def process_cpu_s() -> float:
    """User + system CPU seconds of this process, every thread included (nanosecond clock, not ticks)."""
    return time.process_time()


def wants_gpu(device: str | None) -> bool:
    return (device or "cpu").split(":")[0].lower() in ("cuda", "gpu")


@dataclass
class Phase:
    start_mib: float | None = None
    end_mib: float | None = None
    peak_mib: float | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def cores_busy(self) -> float | None:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"start_mib": self.start_mib, "end_mib": self.end_mib, "peak_mib": self.peak_mib}


class _Sampler(threading.Thread):
    """Reads VmRSS every ``interval_s`` and keeps the largest value seen."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval_s, self.peak_kib = interval_s, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kib = max(self.peak_kib, _own_status().get("VmRSS", 0))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak_kib


@dataclass
class UsageTracker:
    """Measures each ``with tracker.phase(name):`` block; ``memory()`` is the record's ``memory`` section."""

    method: str = field(default_factory=detect_method)
    gpu: bool = False  # read GPU memory through NVML at the end of each phase
    sample_ms: float = SAMPLE_MS
    phases: dict[str, Phase] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"memory method {self.method!r} is not one of {', '.join(METHODS)}")
        self._gpu = GpuMemory() if self.gpu else None
        if self._gpu is not None:
            self._gpu.read("start")  # the baseline: what the GPU held before this cell loaded anything

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        phase = self.phases[name] = Phase()
        sampler = None
        if self.method != "unavailable":
            if self.method == "clear_refs":
                reset_peak()
            phase.start_mib = _mib(_own_status().get("VmRSS"))
            if self.method == "sampled":
                sampler = _Sampler(self.sample_ms / 1000)
                sampler.start()
        cpu0, wall0 = process_cpu_s(), time.perf_counter()
        try:
            yield phase
        finally:
            phase.wall_s, phase.cpu_s = time.perf_counter() - wall0, process_cpu_s() - cpu0
            if self.method != "unavailable":
                status = _own_status()
                phase.end_mib = _mib(status.get("VmRSS"))
                peak = status.get("VmHWM") if sampler is None else max(sampler.stop(), status.get("VmRSS", 0))
                readings = [v for v in (_mib(peak), phase.start_mib, phase.end_mib) if v]
                phase.peak_mib = max(readings) if readings else None
            if self._gpu is not None:
                self._gpu.read(name)

    def memory(self) -> dict[str, Any]:
        """The record's ``memory`` section: per-phase figures, the load's increase, the overall peak."""
        peaks = [p.peak_mib for p in self.phases.values() if p.peak_mib is not None]
        load = self.phases.get("load")
        timed = self.phases.get("timed")
        return {
            "method": self.method,
            "sample_interval_ms": self.sample_ms if self.method == "sampled" else None,
            "rss_before_load_mib": load.start_mib if load else None,
            "rss_after_load_mib": load.end_mib if load else None,
            "load_increase_mib": _difference(load),
            "load_peak_mib": load.peak_mib if load else None,
            "timed_peak_mib": timed.peak_mib if timed else None,
            "peak_mib": max(peaks) if peaks else None,
            "phases": {name: p.to_dict() for name, p in self.phases.items()},
            "gpu": self._gpu.summary() if self._gpu is not None else None,
        }


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 2)


def _difference(phase: Phase | None) -> float | None:
    if phase is None or phase.start_mib is None or phase.end_mib is None:
        return None
    return round(phase.end_mib - phase.start_mib, 2)


class GpuMemory:
    """GPU memory at the end of each phase through NVML; unavailable (with the reason) rather than failing."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.readings: dict[str, dict[str, Any]] = {}
        try:
            import pynvml  # nvidia-ml-py; optional

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except ImportError:
            self.reason = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        except Exception as exc:  # NVMLError_LibraryNotFound, driver errors: no GPU figures
            self.reason = f"NVML unavailable: {exc}"
        if self.reason:
            log.info("GPU memory not recorded: %s", self.reason)

    def read(self, phase: str) -> None:
        if self.reason:
            return
        try:
            self.readings[phase] = self._snapshot()
        except Exception as exc:  # a failed reading must not fail the benchmark
            self.readings[phase] = {"error": f"{type(exc).__name__}: {exc}"}

    def _snapshot(self) -> dict[str, Any]:
        nvml, pid = self._nvml, os.getpid()
        process, device = 0, 0
        seen = False
        for handle in self._handles:
            device += nvml.nvmlDeviceGetMemoryInfo(handle).used
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    process += proc.usedGpuMemory
                    seen = True
        return {"process_used_mib": process / _MIB if seen else None, "device_used_mib": device / _MIB}

    def summary(self) -> dict[str, Any]:
        if self.reason:
            return {"available": False, "reason": self.reason}
        process = [r.get("process_used_mib") for r in self.readings.values()]
        by_process = all(v is not None for v in process) and bool(process)
        key = "process_used_mib" if by_process else "device_used_mib"
        values = [r[key] for r in self.readings.values() if r.get(key) is not None]
        return {"available": True,
                "method": "nvml: this process's memory" if by_process else
                          "nvml: device used memory (this process not listed; other processes included)",
                "phases": self.readings, "peak_observed_mib": max(values) if values else None}
