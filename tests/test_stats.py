"""LatencyStats against values computed by hand."""

from __future__ import annotations

import math

import pytest

from bench.harness.stats import LatencyStats, throughput_ips


def test_four_samples_by_hand():
    stats = LatencyStats.from_samples_ns([1_000_000, 2_000_000, 3_000_000, 4_000_000])  # 1, 2, 3, 4 ms
    assert stats.count == 4
    assert stats.mean == pytest.approx(2.5)
    # sample std: sqrt((1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 3) = sqrt(5/3)
    assert stats.std == pytest.approx(math.sqrt(5 / 3))
    assert stats.cv == pytest.approx(math.sqrt(5 / 3) / 2.5)
    assert (stats.min, stats.max) == (1.0, 4.0)
    # linear interpolation between closest ranks: rank = q * (n - 1)
    assert stats.p5 == pytest.approx(1.15)  # rank 0.15: 1 + 0.15 * (2 - 1)
    assert stats.p10 == pytest.approx(1.3)
    assert stats.p50 == pytest.approx(2.5)
    assert stats.p90 == pytest.approx(3.7)
    assert stats.p95 == pytest.approx(3.85)
    assert stats.p99 == pytest.approx(3.97)


def test_single_sample_has_zero_spread():
    stats = LatencyStats.from_samples_ns([1_500_000])
    assert stats.count == 1
    assert stats.std == 0.0 and stats.cv == 0.0
    assert stats.min == stats.p50 == stats.p99 == stats.max == pytest.approx(1.5)


def test_odd_count_median_and_unsorted_input():
    stats = LatencyStats.from_samples_ms([5.0, 1.0, 3.0])
    assert stats.p50 == 3.0
    assert stats.p90 == pytest.approx(4.6)  # rank 1.8: 3 + 0.8 * (5 - 3)


def test_values_are_numbers_not_strings():
    data = LatencyStats.from_samples_ns([10, 20, 30]).to_dict()
    assert set(data) == {"count", "mean", "std", "cv", "min", "p5", "p10", "p50", "p90", "p95", "p99", "max"}
    assert isinstance(data["count"], int)
    assert all(isinstance(v, float) for k, v in data.items() if k != "count")


def test_round_trip():
    stats = LatencyStats.from_samples_ms([1.0, 2.0, 4.0])
    assert LatencyStats.from_dict(stats.to_dict()) == stats


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="at least one sample"):
        LatencyStats.from_samples_ns([])


def test_throughput_is_images_over_wall_time():
    assert throughput_ips(batch=8, count=100, wall_s=2.0) == pytest.approx(400.0)
    assert throughput_ips(batch=1, count=3, wall_s=0.5) == pytest.approx(6.0)
    with pytest.raises(ValueError):
        throughput_ips(batch=1, count=1, wall_s=0.0)
