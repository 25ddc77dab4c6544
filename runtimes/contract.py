"""The adapter contract as checks: what every runtime the registry lists must keep, a plugin included.

The project's tests run :func:`check_runtime` on every name ``list_runtimes(include_test=True)`` gives, entry-point
plugins installed in the environment too; a plugin's own tests call it on their adapter and an artifact of
theirs::

    from core.artifact import Artifact
    from runtimes.contract import check_runtime

    def test_my_runtime_keeps_the_contract():
        check_runtime("myrt", Artifact.from_manifest(path_to_model_onnx_json))

Each check raises AssertionError naming the rule broken; nothing here needs pytest. What is held:

- declarations: a name; precisions, a non-empty subset of ``runtimes.base.PRECISIONS``; device kinds and model
  formats, non-empty; an ``Options`` dataclass whose every field has a default and a meaning (``option``);
  capabilities of the right types; ``probe`` answers an :class:`Availability` without raising;
- lifecycle: methods called out of order raise :class:`LifecycleError`, ``close`` is idempotent (also on a
  runtime never loaded), ``effective`` records ``device``, ``precision`` and the batch run, ``outputs`` hold the
  model's output for that batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.artifact import Artifact
from runtimes.base import PRECISIONS, Availability, LifecycleError, Runtime, RuntimeOptions


def check_runtime(runtime: str | type[Runtime], artifact: Artifact, batch: int = 3) -> None:
    """Every check below, on the runtime's first device (its default)."""
    cls = _runtime_class(runtime)
    check_declarations(cls)
    check_lifecycle(cls, artifact, batch)


def check_declarations(cls: type[Runtime]) -> None:
    name = getattr(cls, "name", None)
    _expect(isinstance(name, str) and name, f"{cls.__name__}: no name")
    _expect(_strings(cls.precisions) and set(cls.precisions) <= set(PRECISIONS),
            f"{name}: precisions {cls.precisions!r} must be a non-empty tuple of {', '.join(PRECISIONS)}")
    _expect(_strings(cls.devices), f"{name}: devices {cls.devices!r} must be a non-empty tuple of device kinds")
    _expect(_strings(cls.formats), f"{name}: formats {cls.formats!r} must be a non-empty tuple of model formats")
    for flag in ("int8_from_export", "runs_paddle_model", "can_explain"):
        _expect(isinstance(getattr(cls, flag), bool), f"{name}: {flag} must be a bool")
    _expect(not cls.int8_from_export or "int8" in cls.precisions, f"{name}: int8_from_export without int8")
    for answer in ("supports_throughput", "can_profile"):
        _expect(isinstance(getattr(cls, answer)(), bool), f"{name}: {answer}() must answer a bool")
    check_options_declared(cls)
    availability = cls.probe()
    _expect(isinstance(availability, Availability), f"{name}: probe() returned {availability!r}")


def check_options_declared(cls: type[Runtime]) -> None:
    """The runtime's own options: a dataclass, every field with a default and a meaning."""
    options = cls.Options
    _expect(dataclasses.is_dataclass(options), f"{cls.name}: Options {options!r} is not a dataclass")
    for f in dataclasses.fields(options):
        _expect(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
                f"{cls.name}: option {f.name} has no default")
        _expect(bool(f.metadata.get("help")), f"{cls.name}: option {f.name} has no meaning: declare it with "
                                              f"runtimes.base.option(default, meaning)")


def check_lifecycle(cls: type[Runtime], artifact: Artifact, batch: int = 3) -> None:
    feeds = seeded_feeds(artifact, batch)
    rt = cls(RuntimeOptions(device=cls.devices[0], batch=batch))
    try:
        _raises_lifecycle(rt.run, f"{cls.name}: run() before load()")
        _raises_lifecycle(lambda: rt.prepare(feeds), f"{cls.name}: prepare() before load()")
        rt.load(artifact)
        _raises_lifecycle(rt.run, f"{cls.name}: run() before prepare()")
        _raises_lifecycle(rt.outputs, f"{cls.name}: outputs() before prepare()")
        _raises_lifecycle(lambda: rt.load(artifact), f"{cls.name}: load() twice")
        rt.prepare(feeds)
        rt.run()
        outputs = rt.outputs()
    finally:
        rt.close()
    missing = {"device", "precision", "batch"} - set(rt.effective)
    _expect(not missing, f"{cls.name}: effective lacks {', '.join(sorted(missing))}")
    _expect(rt.effective["batch"] == batch, f"{cls.name}: effective batch {rt.effective['batch']}, ran {batch}")
    output = outputs.get(artifact.output_name)
    _expect(output is not None and output.shape[0] == batch,
            f"{cls.name}: outputs() has no {artifact.output_name!r} of batch {batch}")
    rt.close()  # idempotent
    _raises_lifecycle(rt.run, f"{cls.name}: run() after close()")
    cls(RuntimeOptions(device=cls.devices[0])).close()  # closing a runtime never loaded is fine


def seeded_feeds(artifact: Artifact, batch: int) -> dict[str, np.ndarray]:
    data = np.random.default_rng(0).standard_normal(artifact.batch_shape(batch))
    return {artifact.input_name: data.astype(artifact.input_dtype)}


def _runtime_class(runtime: str | type[Runtime]) -> type[Runtime]:
    if isinstance(runtime, str):
        from runtimes import get_runtime

        return get_runtime(runtime)
    return runtime


def _strings(values) -> bool:
    return isinstance(values, tuple) and bool(values) and all(isinstance(v, str) and v for v in values)


def _raises_lifecycle(call, what: str) -> None:
    try:
        call()
    except LifecycleError:
        return
    raise AssertionError(f"{what} must raise LifecycleError")


def _expect(condition, message: str) -> None:
    if not condition:
        raise AssertionError(message)
