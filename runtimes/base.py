"""The adapter contract every runtime implements.

Lifecycle: ``__init__`` (cheap: stores and checks options) -> ``load`` -> ``prepare`` -> ``run``* ->
``outputs`` -> ``close``. The harness (``bench.harness``) owns warm-up and timing; an adapter's ``run`` must
block until results are ready. Public methods check the order and delegate to the underscored hooks
subclasses implement. No heavy import happens here: adapters import their runtime package inside ``_load``.

Options: the common ones (device, precision, threads, batch) are :class:`RuntimeOptions` fields, checked once, in
``__init__`` (:func:`check_options`); the knobs of one runtime are its own ``Options`` dataclass, each field made
with :func:`option` (default and meaning, ``python -m bench list --options``), parsed from ``RuntimeOptions.extra``
in ``__init__``, so an unknown key (``--option hnt=throughput``) is an error that lists the allowed ones, never
silently ignored.

Capabilities: what a runtime can do is declared on its class (``precisions``, ``devices``, ``formats``,
``int8_from_export``, ``runs_paddle_model``, ``can_explain``), follows from the hooks it implements
(``supports_throughput``, ``can_profile``), or is a class method (``precision_for``: the precision a model
runs at; ``precision_caveat``: a precision that would not run as itself here); callers ask the class, never a
list of runtime names. ``runtimes.contract`` checks the declarations.

What ran: after ``load`` an adapter's ``effective`` holds at least ``device`` and ``precision`` as they took
effect (read back from the engine where it allows), and after ``prepare`` the ``batch``; ``notes`` say
anything a reader of the results must know (a fallback, a lowered precision).

Scenarios (``RuntimeOptions.scenario``): ``latency`` sends one request at a time through ``run``. ``throughput``
keeps several requests in flight: the adapter configures itself for it in ``_load`` (OpenVINO's THROUGHPUT
hint, threads split among requests, ...) and records ``requests`` (and how many threads each one gets) in
``effective``; after ``prepare``, ``requests()`` hands the harness a :class:`Requests` pool whose ``start``
begins one inference and calls back when it ends, so the harness, not the adapter, reads the clock.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from core.artifact import Artifact

log = logging.getLogger(__name__)

REQUIRED_EFFECTIVE = ("device", "precision")
REQUIRED_THROUGHPUT_EFFECTIVE = ("requests", "threads_per_request")
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Scenario = Literal["latency", "throughput"]  # one request at a time | ``requests`` in flight
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
SCENARIOS: tuple[str, ...] = typing.get_args(Scenario)


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here: package missing, no device, provider absent."""


class LifecycleError(RuntimeError):
    """A method was called out of order (e.g. ``run`` before ``prepare``)."""


class SilentChangeError(RuntimeError):
    """The runtime would do something other than what was asked (CPU fallback, lowered precision)."""


class OptionError(ValueError):
    """An option the runtime does not have, or a value it does not accept."""


@dataclass(frozen=True)
class Availability:
    name: str
    available: bool
    reason: str = ""  # why not, with the install hint
    detail: str = ""  # versions, devices, providers seen
    notes: tuple[str, ...] = ()  # more lines for `bench list`: e.g. each GPU provider, usable or why not


@dataclass(frozen=True)
class NoOptions:
    """A runtime without options of its own."""


@dataclass(frozen=True)
class NodeTime:
    """One node as the runtime ran it, summed over the profiled runs."""

    op: str
    microseconds: float
    shape: str = ""  # its output shape, as the runtime reports it
    kernel: str = ""


@dataclass(frozen=True)
class LayerTimes:
    """Where a model's time goes, per op type as the runtime ran it (after its own fusions), summed over the
    profiled runs (``Runtime.layer_times``); ``per_node`` the same per node, by the runtime's node name."""

    microseconds: dict[str, float]
    nodes: dict[str, int]  # nodes of that type that ran, summed over the runs
    kernels: dict[str, set[str]]  # the kernels that ran it, where the runtime names them
    per_node: dict[str, NodeTime] = field(default_factory=dict)


@dataclass
class RuntimeOptions:
    """What the user asked of a runtime. The adapter's ``effective`` records what actually ran."""

    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N" | "gpu" | "auto" (per runtime)
    precision: Precision = "fp32"
    threads: int | None = None  # None: one per physical core visible to the process (core.cores)
    batch: int = 1
    max_batch: int | None = None  # TensorRT profile upper bound; defaults to batch
    extra: dict[str, Any] = field(default_factory=dict)  # the runtime's own options, by name
    scenario: Scenario = "latency"
    requests: int | None = None  # throughput: requests in flight; None: what the runtime recommends

    def to_dict(self) -> dict:
        return asdict(self)


def option(default: Any, meaning: str) -> Any:
    """A field of a runtime's ``Options`` dataclass: its default and what it means (``bench list --options``)."""
    return field(default=default, metadata={"help": meaning})


def describe_fields(options_type: type) -> list[dict[str, Any]]:
    """Name, type, default and meaning of each field of a runtime's ``Options`` dataclass."""
    hints = typing.get_type_hints(options_type)
    return [{"name": f.name, "type": _describe(hints[f.name]),
             "default": None if f.default is dataclasses.MISSING else f.default, "help": f.metadata.get("help", "")}
            for f in dataclasses.fields(options_type)]


def parse_options(runtime: str, options_type: type, values: dict[str, Any]) -> Any:
    """Build ``options_type`` from ``values``: unknown keys and wrongly typed values raise OptionError."""
    if not dataclasses.is_dataclass(options_type):
        raise TypeError(f"{options_type!r} is not a dataclass")
    hints = typing.get_type_hints(options_type)
    allowed = [f.name for f in dataclasses.fields(options_type)]
    for key, value in values.items():
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            raise OptionError(f"unknown option {key!r} for runtime {runtime!r}; allowed: {listed}")
        if not _matches(value, hints[key]):
            raise OptionError(f"option {key}={value!r} for runtime {runtime!r}: expected {_describe(hints[key])}")
    return options_type(**values)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


Done = Callable[[BaseException | None], None]


class Requests(abc.ABC):
    """``size`` independent inference requests over one prepared runtime: the throughput scenario.

    ``start(done)`` begins one inference on an idle request and returns without waiting for it; ``done`` is
    called exactly once, from any thread (possibly inside ``start``), when that inference has finished, with
    the exception that ended it or None. The harness never has more than ``size`` started and not done, and
    calls ``close`` after the last ``done``.
    """

    size: int

    @abc.abstractmethod
    def start(self, done: Done) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Runtime(abc.ABC):
    """One inference engine bound to one artifact on one device."""

    name: ClassVar[str]
    # --- capabilities: what callers ask the class (see the module docstring) ---------------------------------
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)  # a subset of PRECISIONS
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # device kinds; the first is the default
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # model file formats the runtime loads
    int8_from_export: ClassVar[bool] = False  # int8 runs a model the export stage quantizes for this runtime
    runs_paddle_model: ClassVar[bool] = False  # runs the Paddle model beside an export, not its ONNX graph
    can_explain: ClassVar[bool] = False  # `python -m bench explain` instruments it (bench.explain)
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: RuntimeOptions) -> None:
        check_options(type(self), options)
        self.options = options
        self.own = parse_options(self.name, self.Options, dict(options.extra))
        self.effective: dict[str, Any] = {}  # settings that actually took effect, recorded with results
        self.notes: list[str] = []  # anything a reader must know (fallbacks, lowered precision)
        self.artifact: Artifact | None = None
        self._state = "new"

    # --- availability -------------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def probe(cls, device: str | None = None) -> Availability:
        """Can this runtime run here (on ``device``, when given)? Must not raise; may import its package."""

    # --- lifecycle ----------------------------------------------------------------------------------------
    def load(self, artifact: Artifact) -> None:
        self._expect("new")
        if artifact.format not in self.formats:
            raise RuntimeUnavailable(f"runtime {self.name!r} cannot load a {artifact.format} model "
                                     f"({artifact.model_path.name}); it loads {', '.join(self.formats)}")
        log.info("%s: loading %s", self.name, artifact.model_path.name)
        self._state = "loading"  # a failed load still needs close() to free what it allocated
        self._load(artifact)
        required = REQUIRED_EFFECTIVE + (REQUIRED_THROUGHPUT_EFFECTIVE if self.throughput else ())
        missing = [key for key in required if key not in self.effective]
        if missing:
            raise LifecycleError(f"{self.name}: _load() did not record effective {', '.join(missing)}")
        self.artifact = artifact
        self._state = "loaded"

    def prepare(self, feeds: dict[str, np.ndarray]) -> None:
        self._expect("loaded", "prepared")
        self._prepare(feeds)
        self.effective["batch"] = int(next(iter(feeds.values())).shape[0])
        self._state = "prepared"

    def run(self) -> None:
        if self._state != "prepared":
            raise LifecycleError(f"{self.name}: call prepare() before run() (state: {self._state})")
        self._run()

    def outputs(self) -> dict[str, np.ndarray]:
        self._expect("prepared")
        return self._outputs()

    def close(self) -> None:
        if self._state != "closed":
            try:
                self._close()
            finally:
                self._state = "closed"  # a failed close is not retried: it would free twice

    # --- the throughput scenario ---------------------------------------------------------------------------
    @property
    def throughput(self) -> bool:
        return self.options.scenario == "throughput"

    @classmethod
    def supports_throughput(cls) -> bool:
        """Does this adapter implement ``_requests`` (the throughput scenario)?"""
        return cls._requests is not Runtime._requests

    # --- capabilities the adapter answers itself ---------------------------------------------------------
    @classmethod
    def can_profile(cls) -> bool:
        """Does this adapter implement ``_layer_times`` (``python -m bench run --profile``)?"""
        return cls._layer_times.__func__ is not Runtime._layer_times.__func__

    @classmethod
    def layer_times(cls, artifact: Artifact, inputs: np.ndarray, options: RuntimeOptions, warmup: int,
                    runs: int) -> LayerTimes:
        """Profile ``runs`` runs on ``inputs`` after ``warmup``, in a session of the runtime's own made as
        ``load`` makes it for ``options``, with the runtime's profiler on."""
        if not cls.can_profile():
            raise RuntimeUnavailable(f"cannot profile {cls.name}: the adapter has no profiler")
        return cls._layer_times(artifact, inputs, options, warmup, runs)

    @classmethod
    def precision_for(cls, asked: str | None, artifact: Artifact) -> str:
        """The precision this runtime runs ``artifact`` at when ``asked`` (None: its default for that model);
        SilentChangeError where it would run something other than asked (``load`` raises the same)."""
        return asked or "fp32"

    @classmethod
    def precision_caveat(cls, precision: str, device: str | None, flags: dict[str, bool] | None) -> str | None:
        """Why ``precision`` on ``device`` (None: the default) would not run as itself on a CPU with ``flags``, or
        would be no faster than fp32 (None: nothing to say)."""
        return None

    def requests(self, end2end: bool = False) -> Requests:
        """The pool of requests the throughput scenario keeps in flight, over the inputs of ``prepare``.

        ``end2end``: each inference also copies the host input in and the host output out, as ``prepare`` and
        ``outputs`` do in the latency scenario. The caller closes the pool before closing the runtime."""
        self._expect("prepared")
        if not self.throughput:
            raise LifecycleError(f"{self.name}: requests() needs options.scenario='throughput' before load()")
        pool = self._requests(end2end)
        self.effective["requests"] = pool.size
        return pool

    def versions(self) -> dict[str, str]:
        return {}

    def device_time_ms(self) -> float | None:
        """Device-side time of the last run() where the API offers it (CUDA events); else None."""
        return None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:
                raise
            # The error that is propagating says what went wrong; a cleanup error must not replace it.
            log.warning("%s: close() failed while %s propagates", self.name, exc_type.__name__, exc_info=True)

    def _expect(self, *states: str) -> None:
        if self._state not in states:
            raise LifecycleError(f"{self.name}: expected state {' or '.join(states)}, got {self._state}")

    # --- hooks --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self, artifact: Artifact) -> None: ...

    @abc.abstractmethod
    def _prepare(self, feeds: dict[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def _run(self) -> None: ...

    @abc.abstractmethod
    def _outputs(self) -> dict[str, np.ndarray]: ...

    def _requests(self, end2end: bool) -> Requests:
        raise NotImplementedError(f"runtime {self.name!r} has no throughput scenario")

    @classmethod
    def _layer_times(cls, artifact: Artifact, inputs: np.ndarray, options: RuntimeOptions, warmup: int,
                     runs: int) -> LayerTimes:
        raise NotImplementedError(f"runtime {cls.name!r} has no profiler")

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass


def check_options(runtime: type[Runtime], options: RuntimeOptions) -> None:
    """The one check of the common options against what ``runtime`` offers (its class's capabilities)."""
    name = runtime.name
    if options.precision not in runtime.precisions:
        raise OptionError(f"runtime {name!r} does not support precision {options.precision!r}; "
                          f"choose one of {', '.join(runtime.precisions)}")
    if options.scenario not in SCENARIOS:
        raise OptionError(f"--scenario must be one of {', '.join(SCENARIOS)}, got {options.scenario!r}")
    requests = options.requests
    if requests is not None:
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise OptionError(f"--requests must be a positive integer, got {requests}")
        if options.scenario != "throughput":
            raise OptionError("--requests (requests in flight) needs --scenario throughput")
    if options.scenario == "throughput" and not runtime.supports_throughput():
        raise OptionError(f"runtime {name!r} has no throughput scenario (it keeps one request at a time)")
