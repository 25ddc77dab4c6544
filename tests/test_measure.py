"""The harness protocol, driven with the null runtime (and small real subclasses of it that count calls)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.harness.measure import MeasureParams, measure, synthetic_feeds
from core.artifact import Artifact, ArtifactError
from core.manifest import TensorSpec
from runtimes.base import RuntimeOptions
from runtimes.null import NullRuntime


class FakeClock:
    """Stands in for ``time.perf_counter_ns`` in the harness: time moves only when a run says so, so the
    assertions below are exact instead of depending on how busy the machine is."""

    def __init__(self) -> None:
        self.now = 0

    def perf_counter_ns(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1e6)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    import bench.harness.measure as harness

    fake = FakeClock()
    monkeypatch.setattr(harness, "time", fake)
    return fake


class CountingRuntime(NullRuntime):
    """The null runtime, counting calls; with a fake clock its first run takes 50 ms and the others 1 ms."""

    first_run_ms, run_ms = 50.0, 1.0
    clock: FakeClock | None = None

    def __init__(self, options: RuntimeOptions) -> None:
        super().__init__(options)
        self.runs = self.prepares = self.outputs_calls = 0

    def _prepare(self, feeds):
        self.prepares += 1
        super()._prepare(feeds)

    def _run(self) -> None:
        self.runs += 1
        if self.clock is not None:
            self.clock.advance_ms(self.first_run_ms if self.runs == 1 else self.run_ms)

    def _outputs(self):
        self.outputs_calls += 1
        return super()._outputs()


class DeviceTimedRuntime(NullRuntime):
    def device_time_ms(self) -> float | None:
        return 0.25


@pytest.fixture(scope="module")
def artifact(onnx_artifact) -> Artifact:
    return Artifact.from_manifest(onnx_artifact)


def _params(**kw) -> MeasureParams:
    base = dict(warmup=0, iterations=1, min_duration_s=0.0, max_duration_s=10.0)
    return MeasureParams(**{**base, **kw})


def counting(clock: FakeClock) -> CountingRuntime:
    rt = CountingRuntime(RuntimeOptions())
    rt.clock = clock
    return rt


def test_min_iterations_reached_when_duration_is_short(artifact):
    result = measure(NullRuntime(RuntimeOptions()), artifact, 2, _params(iterations=500))
    assert result.latency.count == 500  # stops as soon as both targets are met
    assert result.stopped_by == "target"
    assert len(result.samples_ns) == 500


def test_min_duration_reached_when_iterations_are_few(artifact, clock):
    result = measure(counting(clock), artifact, 1, _params(iterations=3, min_duration_s=0.2))
    assert result.latency.count == 200 and result.wall_s == pytest.approx(0.2)  # 200 runs of 1 ms
    assert result.stopped_by == "target"


def test_max_duration_caps_the_loop(artifact, clock):
    result = measure(counting(clock), artifact, 1,
                     _params(iterations=10**9, min_duration_s=0.0, max_duration_s=0.1))
    assert result.stopped_by == "max_duration"
    assert result.latency.count == 100 and result.wall_s == pytest.approx(0.1)


def test_first_run_is_apart_and_warmup_count_is_honoured(artifact, clock):
    rt = counting(clock)
    result = measure(rt, artifact, 1, _params(warmup=7, iterations=20))
    assert rt.runs == 1 + 7 + result.latency.count and result.latency.count == 20
    assert result.first_run_ms == pytest.approx(50.0)
    assert result.latency.max == pytest.approx(1.0)  # the cold run is not a sample
    assert rt.prepares == 1  # compute scope: inputs prepared once, outside the timed region
    assert rt.outputs_calls == 0
    assert result.load_s >= 0 and result.warmup == 7


def test_end2end_scope_times_prepare_run_and_outputs(artifact):
    rt = CountingRuntime(RuntimeOptions())
    result = measure(rt, artifact, 2, _params(warmup=3, iterations=10, scope="end2end"))
    steps = 1 + 3 + result.latency.count
    assert rt.runs == steps
    assert rt.prepares == 1 + steps  # the untimed prepare, then one inside every step
    assert rt.outputs_calls == steps
    assert result.timing_dict()["scope"] == "end2end"


def test_throughput_is_batch_times_runs_over_the_loop_wall_time(artifact, clock):
    result = measure(counting(clock), artifact, 4, _params(iterations=50))
    assert result.throughput_ips == pytest.approx(4 * 50 / 0.050)  # 50 runs of 1 ms, 4 images each


def test_device_times_are_collected_when_offered(artifact):
    result = measure(DeviceTimedRuntime(RuntimeOptions()), artifact, 1, _params(iterations=10))
    assert result.device_latency is not None
    assert result.device_latency.count == result.latency.count
    assert result.device_latency.mean == pytest.approx(0.25)
    assert measure(NullRuntime(RuntimeOptions()), artifact, 1, _params()).device_latency is None


def test_timing_dict_has_numbers_and_throughput(artifact):
    result = measure(NullRuntime(RuntimeOptions()), artifact, 4, _params(iterations=100))
    timing = result.timing_dict()
    assert set(timing) >= {"scope", "load_s", "first_run_ms", "latency_ms", "device_latency_ms",
                           "throughput_ips", "wall_s", "stopped_by"}
    assert timing["throughput_ips"] == pytest.approx(4 * 100 / result.wall_s)
    assert all(isinstance(v, int | float) for v in timing["latency_ms"].values())


def test_synthetic_feeds_are_seeded(artifact):
    a = synthetic_feeds(artifact, 3, seed=1)
    b = synthetic_feeds(artifact, 3, seed=1)
    c = synthetic_feeds(artifact, 3, seed=2)
    (name, x), = a.items()
    assert name == artifact.input_name
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x, b[name])
    assert not np.array_equal(x, c[name])


def test_fixed_batch_artifact_rejects_other_batches(artifact):
    import dataclasses

    graph = dataclasses.replace(artifact.manifest.graph, inputs=[TensorSpec("x", [2, 3, 32, 32])])
    fixed = dataclasses.replace(artifact, manifest=dataclasses.replace(artifact.manifest, graph=graph))
    assert synthetic_feeds(fixed, 2)[fixed.input_name].shape[0] == 2
    with pytest.raises(ArtifactError, match="fixed batch 2"):
        synthetic_feeds(fixed, 8)


def test_synthetic_feeds_are_drawn_in_float32(artifact):
    """A float64 draw first would need twice the input's memory (batch 100000 died on 146 GiB)."""
    import tracemalloc

    tracemalloc.start()
    feeds = synthetic_feeds(artifact, 256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    nbytes = feeds[artifact.input_name].nbytes
    assert nbytes == 256 * 3 * 32 * 32 * 4
    assert peak < 1.3 * nbytes


def test_params_are_validated():
    with pytest.raises(ValueError, match="scope"):
        MeasureParams(scope="wallclock")
    with pytest.raises(ValueError):
        MeasureParams(iterations=0)
