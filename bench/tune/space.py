"""What ``bench tune`` searches: runtime x precision x graph optimisation level x batch x threads (latency) or
requests in flight (throughput, which also set OpenVINO's streams), cut to what this host can run: runtimes
whose probe says they are available (``python -m bench list``), precisions their adapter offers that run as
themselves here (OpenVINO's bf16/fp16 hints only on a CPU with those instructions: elsewhere they run fp32,
the fp32 candidate already; ORT fp16 only on a GPU: on the CPU provider it only adds Casts), and levels whose
graph the runtime takes (``ort`` for ONNX Runtime only). What is left out is listed with the reason.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from bench.accuracy.drift_pass import DriftSettings
from bench.config import BenchConfig, runtime_precisions
from bench.harness.measure import MeasureParams
from bench.request import BenchRequest, Output, Target, with_int8_recipe
from core.cpu import native
from export.optimize.levels import DEFAULT_LEVEL, LEVELS, LevelError, check_runtime
from runtimes.base import RuntimeOptions
from runtimes.host import default_threads


@dataclass(frozen=True)
class Space:
    """The axes asked; None: the default of each (module docstring)."""

    objective: str  # "latency": the latency scenario, a threads axis | "throughput": requests in flight
    runtimes: tuple[str, ...]
    precisions: tuple[str, ...] | None = None
    batches: tuple[int, ...] | None = None
    threads: tuple[int, ...] | None = None
    requests: tuple[int, ...] | None = None
    levels: tuple[str, ...] | None = None

    def batch_axis(self) -> tuple[int, ...]:
        return self.batches or ((1,) if self.objective == "latency" else (1, 8))

    def threads_axis(self, cores: int) -> tuple[int | None, ...]:
        """Latency: every core, half of them, one; throughput: the runtime's own split among the requests."""
        if self.threads:
            return self.threads
        if self.objective == "throughput":
            return (None,)
        return tuple(sorted({cores, max(1, cores // 2), 1}, reverse=True))

    def requests_axis(self, cores: int) -> tuple[int | None, ...]:
        """Throughput: the runtime's recommendation and one per core; latency: one request at a time."""
        if self.objective == "latency":
            return (None,)
        return self.requests or tuple(dict.fromkeys((None, cores)))


@dataclass(frozen=True)
class Candidate:
    runtime: str
    precision: str
    level: str
    batch: int
    threads: int | None
    requests: int | None


def precision_skip(runtime: str, precision: str, device: str | None, flags: dict[str, bool] | None) -> str | None:
    """Why ``precision`` on ``runtime`` is no candidate here (None: it is one)."""
    on_cpu = device in (None, "cpu")
    if runtime == "ov" and precision in ("bf16", "fp16") and on_cpu and not native(precision, flags):
        return f"ov {precision}: this CPU has no {precision} instructions, so it would run fp32"
    if runtime == "ort" and precision == "fp16" and on_cpu:
        return "ort fp16: the CPU provider only adds Casts around fp32 kernels"
    return None


def candidates(space: Space, devices: dict[str, str], flags: dict[str, bool] | None = None,
               cores: int | None = None) -> tuple[list[Candidate], list[str]]:
    """Every candidate this host can run, and what was left out with why."""
    cores = cores or default_threads()
    found, left_out = [], []
    for runtime in space.runtimes:
        offered = runtime_precisions(runtime)
        for precision in space.precisions or offered:
            why = (f"{runtime} has no precision {precision}" if precision not in offered
                   else precision_skip(runtime, precision, devices.get(runtime), flags))
            if why:
                left_out.append(why)
                continue
            for level in space.levels or tuple(LEVELS):
                why = level_skip(runtime, precision, level)
                if why:
                    left_out += [why] if space.levels else []
                    continue
                axes = itertools.product(space.batch_axis(), space.threads_axis(cores), space.requests_axis(cores))
                found += [Candidate(runtime, precision, level, *axis) for axis in axes]
    return found, list(dict.fromkeys(left_out))


def level_skip(runtime: str, precision: str, level: str) -> str | None:
    """Why graph ``level`` is no candidate for ``runtime`` at ``precision`` (None: it is one)."""
    if runtime == "paddle":
        return None if level == DEFAULT_LEVEL else "paddle runs the Paddle model: graph levels are ONNX's"
    try:
        check_runtime(level, runtime)
    except LevelError:
        return f"{runtime}: optimisation level {level} makes a graph for {', '.join(LEVELS[level].runtimes)} only"
    if precision == "int8" and LEVELS[level].runtimes is not None:
        return f"{runtime} int8: quantised from standard ONNX, not from the {level} level's runtime-specific graph"
    return None


@dataclass(frozen=True)
class Setting:
    """What every request of one tune shares: the model, where records and exports go, the drift pass."""

    target: Target
    config: BenchConfig
    results: str
    drift: DriftSettings | None
    devices: dict[str, str]
    scenario: str


def request_for(candidate: Candidate, setting: Setting, measure: MeasureParams, run_id: str,
                drift: bool) -> BenchRequest:
    """The cell request of ``candidate``: a screening one (no drift pass) or the final one."""
    target = replace(setting.target, optimize=candidate.level)
    target = with_int8_recipe(target, candidate.runtime, candidate.precision, setting.config.export.int8)
    options = RuntimeOptions(device=setting.devices.get(candidate.runtime), precision=candidate.precision,
                             threads=candidate.threads, batch=candidate.batch, scenario=setting.scenario,
                             requests=candidate.requests)
    return BenchRequest(runtime_name=candidate.runtime, target=target, runtime=options, measure=measure,
                        drift=setting.drift if drift else None, output=Output(setting.results, run_id))


def accuracy_class(request: BenchRequest) -> tuple:
    """Candidates of one class give the same answers (fp32 on every runtime and graph level: the export is
    proven equal to Paddle; a reduced precision: its runtime's and, for int8, its own quantised graph); fp32
    is at least as accurate as every class. Only a candidate at least as accurate may drop another."""
    precision = request.runtime.precision
    if precision == "fp32":
        return ("fp32",)
    level = request.target.optimize if precision == "int8" else None
    return (request.runtime_name, precision, level)


def at_least_as_accurate(a: tuple, b: tuple) -> bool:
    return a == ("fp32",) or a == b
