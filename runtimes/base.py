"""The adapter contract every runtime implements.

Lifecycle: ``__init__`` (cheap: stores and checks options) -> ``load`` -> ``prepare`` -> ``run``* ->
``outputs`` -> ``close``. The harness (``bench.harness``) owns warm-up and timing; an adapter's ``run`` must
block until results are ready. Public methods check the order and delegate to the underscored hooks
subclasses implement. No heavy import happens here: adapters import their runtime package inside ``_load``.

Options: the common ones (device, precision, threads, batch) are :class:`RuntimeOptions` fields; the knobs
of one runtime are its own ``Options`` dataclass, parsed from ``RuntimeOptions.extra`` in ``__init__``, so an
unknown key (``--option hnt=throughput``) is an error that lists the allowed ones, never silently ignored.

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
from typing import Any, ClassVar

import numpy as np

from core.artifact import Artifact

log = logging.getLogger(__name__)

REQUIRED_EFFECTIVE = ("device", "precision")
REQUIRED_THROUGHPUT_EFFECTIVE = ("requests", "threads_per_request")
SCENARIOS = ("latency", "throughput")


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


@dataclass
class RuntimeOptions:
    """What the user asked of a runtime. The adapter's ``effective`` records what actually ran."""

    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N" | "gpu" | "auto" (per runtime)
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16" | "int8"
    threads: int | None = None  # None: one per physical core visible to the process
    batch: int = 1
    max_batch: int | None = None  # TensorRT profile upper bound; defaults to batch
    extra: dict[str, Any] = field(default_factory=dict)  # the runtime's own options, by name
    scenario: str = "latency"  # "latency": one request at a time | "throughput": ``requests`` in flight
    requests: int | None = None  # throughput: requests in flight; None: what the runtime recommends

    def to_dict(self) -> dict:
        return asdict(self)


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
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # model file formats the runtime loads
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: RuntimeOptions) -> None:
        if options.precision not in self.precisions:
            raise OptionError(f"runtime {self.name!r} does not support precision {options.precision!r}; "
                              f"choose one of {', '.join(self.precisions)}")
        _check_scenario(self.name, options, self.supports_throughput())
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

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass


def _check_scenario(runtime: str, options: RuntimeOptions, supported: bool) -> None:
    if options.scenario not in SCENARIOS:
        raise OptionError(f"scenario {options.scenario!r} is not one of {', '.join(SCENARIOS)}")
    if options.requests is not None:
        if isinstance(options.requests, bool) or not isinstance(options.requests, int) or options.requests < 1:
            raise OptionError(f"requests must be a positive integer, got {options.requests!r}")
        if options.scenario != "throughput":
            raise OptionError("requests (requests in flight) applies to the throughput scenario only")
    if options.scenario == "throughput" and not supported:
        raise OptionError(f"runtime {runtime!r} has no throughput scenario (it keeps one request at a time)")
