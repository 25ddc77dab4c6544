"""Memory of the cell process: the per-phase peaks of bench.harness.process, and the peaks a real cell process
records checked against an independent reading of its /proc/<pid>/status VmHWM, taken by this test while the
cell waits at the end of its load and at its close."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bench.harness.process import METHOD_ENV, GpuMemory, UsageTracker, detect_method, read_status_kib
from bench.records import read_records

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(),
                                reason="no /proc: resident memory is read from /proc/self/status (Linux)")


def touched(mib: int) -> np.ndarray:
    return np.ones(mib * MIB // 8)  # np.ones writes every page, so all of it is resident


def hold(mib: int, seconds: float = 0.05) -> None:
    data = touched(mib)
    time.sleep(seconds)  # long enough for the sampler (5 ms) to see it
    del data


@pytest.mark.parametrize("method", ["clear_refs", "sampled"])
def test_each_phase_has_its_own_peak(method):
    if method == "clear_refs" and detect_method() != "clear_refs":
        pytest.skip("this kernel refuses /proc/self/clear_refs; the sampled method is tested instead")
    tracker = UsageTracker(method=method)
    with tracker.phase("load"):
        kept = touched(40)
        hold(80)
    with tracker.phase("timed"):
        hold(120)
    memory = tracker.memory()
    load, timed = memory["phases"]["load"], memory["phases"]["timed"]
    assert memory["method"] == method
    assert memory["load_increase_mib"] == pytest.approx(40, abs=6)
    assert load["peak_mib"] == pytest.approx(load["start_mib"] + 120, abs=8)
    # the timed phase's peak is its own, not the load's: 40 kept + 120 held over what was resident before
    assert timed["peak_mib"] == pytest.approx(timed["start_mib"] + 120, abs=8)
    assert memory["peak_mib"] == max(load["peak_mib"], timed["peak_mib"]) == memory["timed_peak_mib"]
    assert (memory["sample_interval_ms"] is None) == (method == "clear_refs")
    del kept


def test_a_phase_records_cpu_time_and_wall_time():
    tracker = UsageTracker()
    with tracker.phase("timed") as phase:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
    assert phase.wall_s > 0 and phase.cpu_s >= 0.04
    assert 0 < phase.cores_busy <= os.cpu_count() + 0.5


def test_gpu_memory_says_why_it_is_missing():
    gpu = GpuMemory()
    summary = gpu.summary()
    if summary["available"]:
        pytest.skip("an NVIDIA GPU is visible here: the missing-GPU path cannot be observed")
    assert summary["reason"].startswith(("NVML unavailable", "nvidia-ml-py is not installed"))
    tracker = UsageTracker(gpu=True)
    with tracker.phase("load"):
        pass
    assert tracker.memory()["gpu"] == {"available": False, "reason": summary["reason"]}
    assert UsageTracker().memory()["gpu"] is None  # no GPU device asked: not looked for


@pytest.mark.gpu
def test_gpu_memory_of_this_process_through_nvml():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    gpu = GpuMemory()
    if gpu.reason:
        pytest.skip(f"no NVIDIA GPU here ({gpu.reason})")
    gpu.read("load")
    summary = gpu.summary()
    assert summary["available"] and summary["phases"]["load"]["device_used_mib"] > 0


# --- a real cell process, read from outside ---------------------------------------------------------------------
MEMHOG = textwrap.dedent('''
    """A test runtime with known memory: load keeps 40 MiB and briefly holds 80 more; each run holds 160 MiB.
    At the end of load and at close it waits for the test to read its /proc/<pid>/status."""
    import os, time
    from pathlib import Path
    import numpy as np
    from runtimes.null import NullRuntime

    def held(mib):
        data = np.ones(mib * (1 << 20) // 8)
        time.sleep(0.05)
        return data

    def handshake(name):
        folder = Path(os.environ["MEMHOG_DIR"])
        (folder / "pid.tmp").write_text(str(os.getpid()))
        os.replace(folder / "pid.tmp", folder / name)  # the test sees the marker only once it holds the pid
        deadline = time.time() + 60
        while not (folder / (name + ".go")).exists():
            if time.time() > deadline:
                raise RuntimeError("the test never read the memory")
            time.sleep(0.005)

    class MemHog(NullRuntime):
        name = "memhog"

        def _load(self, artifact):
            super()._load(artifact)
            self.kept = np.ones(40 * (1 << 20) // 8)
            del_me = held(80)
            del del_me
            handshake("loaded")

        def _run(self):
            data = held(160)
            del data

        def _close(self):
            handshake("closing")
''')


def vmhwm_mib(pid: int, folder: Path, step: str) -> float:
    """Wait for the cell to reach ``step``, read its VmHWM from outside, then let it go on."""
    marker = folder / step
    deadline = time.time() + 120
    while not marker.exists():
        if time.time() > deadline:
            raise AssertionError(f"the cell never reached {step}")
        time.sleep(0.01)
    assert int(marker.read_text()) == pid  # the cell process itself, not a child of it
    value = read_status_kib(Path(f"/proc/{pid}/status"))["VmHWM"] / 1024
    (folder / f"{step}.go").write_text("")
    return value


@pytest.mark.slow
@pytest.mark.parametrize("method", ["detected", "sampled"])
def test_recorded_peaks_match_the_cell_process_vmhwm(onnx_artifact, tmp_path, method):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "memhog_runtime.py").write_text(MEMHOG)
    dist = plugin / "memhog_runtime-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: memhog-runtime\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[paddle_onnx_bench.runtimes]\nmemhog = memhog_runtime:MemHog\n")
    results = tmp_path / "runs.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{plugin}{os.pathsep}{ROOT}", "MEMHOG_DIR": str(tmp_path)}
    if method == "sampled":
        env[METHOD_ENV] = "sampled"
    cell = subprocess.Popen([sys.executable, "-m", "bench", "--runtime", "memhog", "--manifest", str(onnx_artifact),
                             "--warmup", "0", "--iterations", "3", "--duration", "0", "--results", str(results)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        after_load = vmhwm_mib(cell.pid, tmp_path, "loaded")
        at_close = vmhwm_mib(cell.pid, tmp_path, "closing")
        _, stderr = cell.communicate(timeout=120)
    finally:
        cell.kill()
    assert cell.returncode == 0, stderr
    [loaded] = read_records(results).records
    memory = loaded.record.memory
    assert memory["method"] == (detect_method() if method == "detected" else "sampled")
    # a sampling thread wakes during the timed loop: the record says so
    assert any("sampled every 5 ms" in n for n in loaded.record.timing.notes) == (memory["method"] == "sampled")
    # With clear_refs the peak is reset as each phase starts, so VmHWM read at the end of load is the load's
    # peak and VmHWM at close is the timed loop's. Sampled, VmHWM is the process's peak so far: the load's
    # 120 MiB, then the runs' 200 (40 kept + 160), larger on purpose, so the two readings are the same figures.
    assert memory["load_peak_mib"] == pytest.approx(after_load, abs=3)
    assert memory["timed_peak_mib"] == pytest.approx(at_close, abs=3)
    assert memory["peak_mib"] == pytest.approx(max(after_load, at_close), abs=3)
    assert memory["load_increase_mib"] == pytest.approx(40, abs=6)
    assert memory["timed_peak_mib"] - memory["rss_after_load_mib"] == pytest.approx(160, abs=8)
