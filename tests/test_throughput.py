"""The throughput scenario: the harness's request loop (on a fake clock, exact), the adapters' request pools
on the real engines, and what the records say ran."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import runtimes
from bench.harness.measure import MeasureParams, measure
from bench.harness.throughput import RequestStalled, drive, why_not_faster
from core.artifact import Artifact
from runtimes.base import LifecycleError, OptionError, Requests, Runtime, RuntimeOptions
from runtimes.concurrent import ThreadedRequests, threads_per_request
from runtimes.null import NullRuntime


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1e6)


class LockstepPool(Requests):
    """``size`` requests that all take ``run_ms``: nothing finishes until all are in flight, then all finish
    together, ``run_ms`` after they started. On a fake clock the harness's arithmetic is then exact."""

    def __init__(self, clock: FakeClock, size: int, run_ms: float) -> None:
        self.size, self.clock, self.run_ms = size, clock, run_ms
        self.pending: list = []
        self.started = 0

    def start(self, done) -> None:
        self.started += 1
        self.pending.append(done)
        if len(self.pending) == self.size:
            self.clock.advance_ms(self.run_ms)
            pending, self.pending = self.pending, []
            for finished in pending:
                finished(None)


def test_drive_keeps_every_request_in_flight_and_counts_images_over_wall_time():
    clock = FakeClock()
    pool = LockstepPool(clock, size=4, run_ms=10.0)
    run = drive(pool, count=10, min_ns=0, max_ns=10**12, clock=clock, stall_s=5)
    # 10 needed; requests finish 4 at a time, so 12 finished in 3 rounds of 10 ms
    assert len(run.samples_ns) == 12 == pool.started
    assert set(run.samples_ns) == {10_000_000}  # each request's own latency, not the round's share
    assert run.wall_ns == 30_000_000 and run.stopped_by == "target"


def test_drive_needs_both_the_count_and_the_duration():
    clock = FakeClock()
    run = drive(LockstepPool(clock, 2, 10.0), count=1, min_ns=95_000_000, max_ns=10**12, clock=clock, stall_s=5)
    assert run.wall_ns == 100_000_000 and len(run.samples_ns) == 20  # 10 rounds of 2 to pass 95 ms


def test_drive_stops_at_the_safety_cap():
    clock = FakeClock()
    run = drive(LockstepPool(clock, 2, 10.0), count=10**9, min_ns=0, max_ns=50_000_000, clock=clock, stall_s=5)
    assert run.stopped_by == "max_duration" and run.wall_ns == 50_000_000 and len(run.samples_ns) == 10


def test_drive_can_run_one_request_alone():
    """The cold first run: one request, nothing else in flight."""
    clock = FakeClock()
    pool = ThreadedRequests([lambda: clock.advance_ms(7.0)], "solo")
    try:
        run = drive(pool, count=1, min_ns=0, max_ns=10**12, clock=clock, stall_s=5, in_flight=1)
    finally:
        pool.close()
    assert run.samples_ns == [7_000_000]


def test_drive_raises_a_request_error_after_the_others_finished():
    finished = []

    def fails():
        raise ValueError("engine said no")

    def works():
        finished.append(1)

    pool = ThreadedRequests([fails, works, works], "errors")
    try:
        with pytest.raises(ValueError, match="engine said no"):
            drive(pool, count=100, min_ns=0, max_ns=10**12, clock=FakeClock(), stall_s=5)
        # nothing is left running: every worker is idle, waiting for a start
        assert all(w.is_alive() for w in pool._workers) and pool._pending.empty()
    finally:
        pool.close()
    assert not any(w.is_alive() for w in pool._workers)


class SilentPool(Requests):
    """A runtime that loses its completion callbacks."""

    size = 2

    def start(self, done) -> None:
        pass


def test_each_worker_runs_its_setup_once_before_its_first_request():
    """The TensorRT pool selects the CUDA device this way: the current device is per thread."""
    seen: list[str] = []
    pool = ThreadedRequests([lambda: None] * 3, "setup", setup=lambda: seen.append(threading.current_thread().name))
    try:
        run = drive(pool, count=30, min_ns=0, max_ns=10**12, clock=FakeClock(), stall_s=5)
    finally:
        pool.close()
    assert len(run.samples_ns) >= 30 and len(seen) == len(set(seen)) <= 3 and seen


def test_a_request_that_never_finishes_is_an_error_not_a_hang():
    with pytest.raises(RequestStalled, match="no request finished within 0.05 s"):
        drive(SilentPool(), count=5, min_ns=0, max_ns=10**12, clock=FakeClock(), stall_s=0.05)


def test_why_not_faster_explains_from_what_ran():
    assert why_not_faster(4, 1, 3.8, 4) == []
    [one] = why_not_faster(1, 2, 1.9, 2)
    assert "1 request in flight" in one
    [serial] = why_not_faster(2, 1, 1.0, 2, load_average=0.1)
    assert "kept 1.00 of 2 cores busy" in serial and "load average 0.1 on 2 cores" in serial
    assert why_not_faster(2, None, 0.1, 2) == []  # GPU requests: the CPU is not what they use


def test_threads_are_split_among_requests():
    assert [threads_per_request(8, n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


# --- the scenario through the harness -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(onnx_artifact) -> Artifact:
    return Artifact.from_manifest(onnx_artifact)


FAST = MeasureParams(warmup=1, iterations=30, min_duration_s=0.0, max_duration_s=30.0)


class CountingNull(NullRuntime):
    """The null runtime, counting the inferences its request pool ran, per thread."""

    def _requests(self, end2end: bool) -> Requests:
        self.threads: set[str] = set()
        self.ran = 0
        lock = threading.Lock()

        def run() -> None:
            with lock:
                self.ran += 1
                self.threads.add(threading.current_thread().name)

        return ThreadedRequests([run] * self.effective["requests"], "counting")


@pytest.mark.parametrize("scope", ["compute", "end2end"])
def test_measure_throughput_runs_the_runtimes_requests(artifact, scope):
    rt = CountingNull(RuntimeOptions(batch=2, scenario="throughput", requests=3))
    with rt:
        m = measure(rt, artifact, 2, MeasureParams(warmup=1, iterations=30, min_duration_s=0.0, scope=scope))
    assert (m.scenario, m.requests, m.warmup) == ("throughput", 3, 3)  # warm-up runs every request
    assert m.latency.count >= 30 and len(m.samples_ns) == m.latency.count
    # the cold run, the warm-up (which may finish up to size - 1 more than asked) and the timed requests
    assert 1 + m.warmup + m.latency.count <= rt.ran <= 1 + m.warmup + 2 + m.latency.count
    assert len(rt.threads) >= 1 and all(name.startswith("counting-request-") for name in rt.threads)
    assert m.throughput_ips == pytest.approx(2 * m.latency.count / m.wall_s)
    timing = m.timing_dict()
    assert timing["scenario"] == "throughput" and timing["requests"] == 3 and timing["device_latency_ms"] is None
    assert timing["cores_busy"] is not None and {"load", "warmup", "timed"} <= set(m.memory["phases"])


def test_latency_scenario_has_no_request_pool(artifact):
    rt = NullRuntime(RuntimeOptions())
    with rt:
        rt.load(artifact)
        rt.prepare({artifact.input_name: np.zeros((1, 3, 32, 32), np.float32)})
        with pytest.raises(LifecycleError, match="scenario='throughput'"):
            rt.requests()
    m = measure(NullRuntime(RuntimeOptions()), artifact, 1, FAST)
    assert (m.scenario, m.requests, m.notes) == ("latency", 1, [])


def test_scenario_options_are_checked_by_every_adapter():
    class Plain(NullRuntime):
        _requests = Runtime._requests  # a plugin that never implemented the scenario

    assert NullRuntime.supports_throughput() and not Plain.supports_throughput()
    with pytest.raises(OptionError, match="has no throughput scenario"):
        Plain(RuntimeOptions(scenario="throughput"))
    with pytest.raises(OptionError, match="needs --scenario throughput"):
        NullRuntime(RuntimeOptions(requests=2))
    with pytest.raises(OptionError, match="positive integer"):
        NullRuntime(RuntimeOptions(scenario="throughput", requests=0))
    with pytest.raises(OptionError, match="must be one of latency, throughput"):
        NullRuntime(RuntimeOptions(scenario="offline"))


# --- the engines ------------------------------------------------------------------------------------------------
def throughput_run(name: str, artifact: Artifact, scope: str = "compute", **options):
    rt = runtimes.get_runtime(name)(RuntimeOptions(batch=2, scenario="throughput", **options))
    with rt:
        m = measure(rt, artifact, 2, MeasureParams(warmup=2, iterations=20, min_duration_s=0.0, scope=scope))
    return m, rt


@pytest.mark.parametrize("scope", ["compute", "end2end"])
def test_ov_keeps_its_optimal_number_of_requests_in_flight(artifact, scope):
    m, rt = throughput_run("ov", artifact, scope)
    eff = rt.effective
    assert eff["performance_hint"] == "THROUGHPUT" and eff["precision"] == "fp32"
    assert eff["requests"] == eff["optimal_number_of_infer_requests"] == m.requests >= 1
    assert eff["requests_source"] == "OPTIMAL_NUMBER_OF_INFER_REQUESTS"
    assert eff["num_streams"] >= 1 and eff["threads_per_request"] >= 1
    assert m.latency.count >= 20


def test_ov_honours_the_requests_asked(artifact):
    m, rt = throughput_run("ov", artifact, requests=3, threads=2)
    eff = rt.effective
    assert m.requests == eff["requests"] == 3 and eff["requests_source"] == "asked"
    assert eff["requested_config"]["PERFORMANCE_HINT_NUM_REQUESTS"] == "3"
    assert eff["num_streams"] <= 3  # the hint never makes more streams than requests in flight


def test_ov_explicit_latency_hint_is_kept_in_the_throughput_scenario(artifact):
    _, rt = throughput_run("ov", artifact, requests=2, extra={"hint": "latency"})
    assert rt.effective["performance_hint"] == "LATENCY" and rt.effective["requests"] == 2


@pytest.mark.parametrize("scope", ["compute", "end2end"])
def test_ort_splits_the_intra_op_threads_among_requests(artifact, scope):
    m, rt = throughput_run("ort", artifact, scope, threads=4, requests=2)
    eff = rt.effective
    assert (eff["requests"], eff["threads_per_request"], eff["intra_op_threads"]) == (2, 2, 2)
    assert eff["concurrency"].startswith("threads") and m.requests == 2 and m.latency.count >= 20


def test_ort_default_is_one_request_per_thread(artifact):
    _, rt = throughput_run("ort", artifact, threads=3)
    eff = rt.effective
    assert (eff["requests"], eff["intra_op_threads"]) == (3, 1)
    assert eff["requests_source"] == "one request per thread (core)"


def test_ort_run_async_shares_the_pool(artifact):
    m, rt = throughput_run("ort", artifact, threads=2, requests=3, extra={"concurrency": "run_async"})
    eff = rt.effective
    assert (eff["requests"], eff["intra_op_threads"]) == (3, 2) and eff["concurrency"].startswith("run_async")
    assert m.latency.count >= 20
    with pytest.raises(OptionError, match="needs at least 2 threads"):
        throughput_run("ort", artifact, threads=1, extra={"concurrency": "run_async"})


@pytest.mark.slow
def test_paddle_runs_one_predictor_clone_per_request(tiny_artifact):
    artifact = Artifact.from_manifest(tiny_artifact)
    m, rt = throughput_run("paddle", artifact, "end2end", threads=2, requests=2)
    eff = rt.effective
    assert (eff["requests"], eff["threads_per_request"], eff["threads"]) == (2, 1, 1)
    assert eff["concurrency"] == "predictor clones, one per thread" and m.latency.count >= 20


@pytest.mark.gpu
def test_trt_runs_a_context_and_stream_per_request(onnx_artifact, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT not installed: the TensorRT throughput path (one execution "
                                           "context and CUDA stream per request) needs an NVIDIA GPU; written "
                                           "against the TensorRT 10 API and not run yet")
    availability = runtimes.probe("trt", device="cuda")
    if not availability.available:
        pytest.skip(f"TensorRT cannot run here: {availability.reason}")
    artifact = Artifact.from_manifest(onnx_artifact)
    for scope in ("compute", "end2end"):
        m, rt = throughput_run("trt", artifact, scope, device="cuda", requests=3,
                               extra={"engine_cache_dir": str(tmp_path)})
        assert rt.effective["requests"] == m.requests == 3 and m.latency.count >= 20
        assert m.memory["gpu"]["available"] is True
