"""The ``export:`` section of bench.yaml: which models, opsets, batch, weights and graph optimisation level
``python -m export`` builds when no ``--model`` is given (the level also when no ``--optimize`` is).
``bench.config`` reads the same section with this parser."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.yamlio import ConfigReader, load_yaml
from export.convert import MAX_OPSET, MIN_OPSET
from export.layout import LayoutError, parse_batch
from export.models import MODELS, UnknownModelError, expand_models
from export.optimize.levels import DEFAULT_LEVEL, LEVELS
from export.quantize import MIN_IMAGES, Int8Recipe

EXPORT_KEYS = ("models", "opsets", "batch", "weights", "optimize", "int8")
INT8_KEYS = ("calibration", "calibration_size", "max_drop")


@dataclass(frozen=True)
class ExportConfig:
    models: tuple[str, ...] = tuple(MODELS)
    opsets: tuple[int, ...] = (13, 17)
    batch: str | int = "dynamic"
    weights: str = "seeded"  # "seeded" | "official" | a .pdparams path or URL
    optimize: str = DEFAULT_LEVEL  # graph optimisation level (export.optimize.levels)
    int8: Int8Recipe = Int8Recipe()  # how bench's int8 models are made (not read by python -m export)


def parse_models(reader: ConfigReader, data: Any, key: str, allow_empty: bool = False) -> tuple[str, ...]:
    items = reader.sequence(data, key, allow_empty=allow_empty)
    for i, item in enumerate(items):
        try:
            expand_models([item])
        except UnknownModelError as exc:
            raise reader.wrap(f"{key}[{i}]", exc) from None
    return expand_models(items) if items else ()


def parse_opsets(reader: ConfigReader, data: Any, key: str) -> tuple[int, ...]:
    out = []
    for i, v in enumerate(reader.sequence(data, key)):
        if not (isinstance(v, int) and not isinstance(v, bool) and MIN_OPSET <= v <= MAX_OPSET):
            raise reader.fail(f"{key}[{i}]", f"invalid opset {v!r}; allowed: {MIN_OPSET}..{MAX_OPSET}")
        out.append(v)
    return tuple(out)


def parse_export_section(reader: ConfigReader, data: Any) -> ExportConfig:
    d = reader.mapping(data, "export", EXPORT_KEYS)
    default = ExportConfig()
    try:
        batch = parse_batch(d.get("batch", default.batch))
    except LayoutError:
        raise reader.fail("export.batch", f"invalid batch {d.get('batch')!r}; allowed: dynamic, a positive "
                                          "integer") from None
    optimize = reader.string(d.get("optimize", default.optimize), "export.optimize")
    if optimize not in LEVELS:
        raise reader.fail("export.optimize", f"unknown optimisation level {optimize!r}; choose one of "
                                             f"{', '.join(LEVELS)}")
    return ExportConfig(
        models=parse_models(reader, d["models"], "export.models") if "models" in d else default.models,
        opsets=parse_opsets(reader, d["opsets"], "export.opsets") if "opsets" in d else default.opsets,
        batch=batch,
        weights=reader.string(d.get("weights", default.weights), "export.weights"),
        optimize=optimize,
        int8=parse_int8_section(reader, d.get("int8")),
    )


def parse_int8_section(reader: ConfigReader, data: Any) -> Int8Recipe:
    d = reader.mapping(data, "export.int8", INT8_KEYS)
    calibration, size, max_drop = (d.get(key) for key in INT8_KEYS)
    if calibration is not None:
        reader.string(calibration, "export.int8.calibration")
    if size is not None:
        reader.integer(size, "export.int8.calibration_size", minimum=MIN_IMAGES)
    if max_drop is not None and not 0 < reader.number(max_drop, "export.int8.max_drop", positive=True) < 1:
        raise reader.fail("export.int8.max_drop", f"expected a top-1 agreement drop between 0 and 1, got {max_drop}")
    return Int8Recipe(calibration, size, None if max_drop is None else float(max_drop))


def read_export_config(path: Path) -> ExportConfig:
    """The export section of a bench.yaml; built-in defaults when the file has none."""
    data, lines = load_yaml(path)
    reader = ConfigReader(Path(path).name, lines)
    section = reader.mapping(data, "", None)
    return parse_export_section(reader, section.get("export"))
