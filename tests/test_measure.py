"""The harness protocol, driven with the null runtime (and small real subclasses of it that count calls)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.harness.measure import MeasureParams, measure, synthetic_feeds
from core.artifact import Artifact, ArtifactError
from core.manifest import TensorSpec
from runtimes.base import RuntimeOptions
from runtimes.null import NullRuntime


class CountingRuntime(NullRuntime):
    """The null runtime, counting calls; its first run is slow so the cold start is recognisable."""

    first_run_s = 0.05

    def __init__(self, options: RuntimeOptions) -> None:
        super().__init__(options)
        self.runs = self.prepares = self.outputs_calls = 0

    def _prepare(self, feeds):
        self.prepares += 1
        super()._prepare(feeds)

    def _run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            time.sleep(self.first_run_s)

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


def test_min_iterations_reached_when_duration_is_short(artifact):
    result = measure(NullRuntime(RuntimeOptions()), artifact, 2, _params(iterations=500))
    assert result.latency.count == 500  # stops as soon as both targets are met
    assert result.stopped_by == "target"
    assert len(result.samples_ns) == 500


def test_min_duration_reached_when_iterations_are_few(artifact):
    result = measure(NullRuntime(RuntimeOptions()), artifact, 1, _params(iterations=3, min_duration_s=0.2))
    assert result.wall_s >= 0.2
    assert result.latency.count > 3
    assert result.stopped_by == "target"


def test_max_duration_caps_the_loop(artifact):
    result = measure(NullRuntime(RuntimeOptions()), artifact, 1,
                     _params(iterations=10**9, min_duration_s=0.0, max_duration_s=0.1))
    assert result.stopped_by == "max_duration"
    assert 0.1 <= result.wall_s < 2.0


def test_first_run_is_apart_and_warmup_count_is_honoured(artifact):
    rt = CountingRuntime(RuntimeOptions())
    result = measure(rt, artifact, 1, _params(warmup=7, iterations=20))
    assert rt.runs == 1 + 7 + result.latency.count
    assert result.first_run_ms >= CountingRuntime.first_run_s * 1e3
    assert result.latency.max < CountingRuntime.first_run_s * 1e3  # the cold run is not a sample
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
