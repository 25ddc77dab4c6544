"""Latency statistics over per-iteration samples.

All values are numbers in milliseconds (never formatted strings); formatting is the CLI's job.
Percentiles use linear interpolation between closest ranks (numpy's default), and ``std`` is the sample
standard deviation (n - 1), so a handful of iterations is not reported as more stable than it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

PERCENTILES = (5, 10, 50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one timed loop, in ms."""

    count: int
    mean: float
    std: float
    cv: float  # std / mean: how noisy the run was
    min: float
    p5: float
    p10: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def from_samples_ms(cls, samples_ms: Sequence[float]) -> LatencyStats:
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError("latency statistics need at least one sample")
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        p5, p10, p50, p90, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
        return cls(
            count=int(values.size),
            mean=mean,
            std=std,
            cv=std / mean if mean > 0 else 0.0,
            min=float(values.min()),
            p5=p5,
            p10=p10,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            max=float(values.max()),
        )

    @classmethod
    def from_samples_ns(cls, samples_ns: Sequence[int]) -> LatencyStats:
        return cls.from_samples_ms(np.asarray(samples_ns, dtype=np.float64) / 1e6)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencyStats:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def throughput_ips(batch: int, count: int, wall_s: float) -> float:
    """Images per second: ``batch * count`` over the wall time of the whole timed loop.

    Wall time, not the sum of samples, so loop overhead counts against throughput (trtexec's definition:
    executions / total host walltime).
    """
    if wall_s <= 0:
        raise ValueError(f"wall time must be positive, got {wall_s}")
    return batch * count / wall_s
