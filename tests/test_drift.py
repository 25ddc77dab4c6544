"""Drift metrics against hand-computed cases; the arithmetic is in the comments.

z = 1.959963984540054 (95 %), z^2 = 3.8414588206941254 throughout.
Wilson(k, n): centre = (p + z^2/2n) / (1 + z^2/n), half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.accuracy.gates import DEFAULT_GATES, evaluate_gates
from bench.accuracy.reference import cache_key, collect_logits, reference_logits
from core.datasets import SyntheticDataset
from core.logits import Logits
from core.metrics import (
    compare_logits,
    compute_drift,
    mcnemar_exact_p,
    paired_difference_interval,
    wilson_interval,
)

Z2 = 3.8414588206941254


def onehot(preds, num_classes=10, scale=5.0) -> np.ndarray:
    """Logits whose top-1 is ``preds`` (a unique maximum per row)."""
    out = np.zeros((len(preds), num_classes), np.float32)
    out[np.arange(len(preds)), preds] = scale
    return out


# --- Wilson ------------------------------------------------------------------------------------------------

def test_wilson_hand_computed():
    # k = 7, n = 12: p = 0.583333, 1 + z^2/n = 1.320122,
    # centre = (0.583333 + 3.841459/24) / 1.320122 = 0.743394 / 1.320122 = 0.563125
    # half = 1.959964 / 1.320122 * sqrt(0.243056/12 + 3.841459/576) = 1.484683 * 0.164086 = 0.243614
    lo, hi = wilson_interval(7, 12)
    assert lo == pytest.approx(0.563125 - 0.243614, abs=2e-6)  # 0.319511
    assert hi == pytest.approx(0.563125 + 0.243614, abs=2e-6)  # 0.806740


def test_wilson_boundaries_are_exact():
    # k = n = 10: p = 1 -> lower = n / (n + z^2) = 10 / 13.841459 = 0.722467, upper exactly 1.
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + Z2)), 1.0)
    # k = 0: lower exactly 0, upper = z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533.
    assert wilson_interval(0, 10) == (0.0, pytest.approx(Z2 / (10 + Z2)))


# --- McNemar -----------------------------------------------------------------------------------------------

def test_mcnemar_exact_hand_computed():
    # b = 1, c = 3: m = 4, P(X <= 1) = (C(4,0) + C(4,1)) / 2^4 = 5/16, p = 2 * 5/16 = 0.625
    assert mcnemar_exact_p(1, 3) == pytest.approx(0.625, rel=1e-12)
    assert mcnemar_exact_p(3, 1) == pytest.approx(0.625, rel=1e-12)
    # b = 2, c = 10: m = 12, P(X <= 2) = (1 + 12 + 66) / 4096 = 79/4096, p = 158/4096 = 0.0385742
    assert mcnemar_exact_p(2, 10) == pytest.approx(158 / 4096, rel=1e-12)
    # b = 4, c = 0: p = 2 * (1/16) = 0.125
    assert mcnemar_exact_p(4, 0) == pytest.approx(0.125, rel=1e-12)
    # No discordant pairs: no evidence of a difference, p = 1; b = c caps at 1 too.
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 5) == 1.0


def test_mcnemar_large_counts_match_exact_integer_sum():
    # 40,500 discordant pairs (a full ImageNet run could have this many). Exact value from
    # 2 * sum(comb(40500, j) for j <= 20000) / 2**40500 with Python integers: 0.013153825113143827.
    assert mcnemar_exact_p(20000, 20500) == pytest.approx(0.013153825113143827, rel=1e-8)


# --- Newcombe paired interval ------------------------------------------------------------------------------

def test_paired_interval_hand_computed():
    # Candidate-vs-reference table: both right 6, cand only 3 (c), ref only 1 (b), neither 2; n = 12.
    # p1 = cand acc = 9/12 = 0.75, p2 = ref acc = 7/12 = 0.583333, d = 0.166667.
    # Wilson(9, 12) = (0.467695, 0.911058); Wilson(7, 12) = (0.319511, 0.806740).
    # A = 6*2 - 3*1 = 9 > n/2 = 6 -> phi = (9 - 6) / sqrt(9*3*7*5) = 3 / sqrt(945) = 0.097590
    # lower: p1-l1 = 0.282305, u2-p2 = 0.223406
    #   d - sqrt(0.282305^2 - 2*0.097590*0.282305*0.223406 + 0.223406^2) = 0.166667 - 0.342487 = -0.175820
    # upper: p2-l2 = 0.263822, u1-p1 = 0.161058
    #   d + sqrt(0.263822^2 - 2*0.097590*0.263822*0.161058 + 0.161058^2) = 0.166667 + 0.295379 = 0.462045
    lo, hi = paired_difference_interval(6, 3, 1, 2)
    assert lo == pytest.approx(-0.175820, abs=2e-6)
    assert hi == pytest.approx(0.462045, abs=2e-6)


def test_paired_interval_b_equals_c_equals_zero():
    # Both right 8, neither 2, no discordant pairs: d = 0. Wald would give [0, 0]; Newcombe does not.
    # A = 8*2 = 16 > 5 -> phi = (16 - 5) / sqrt(8*2*8*2) = 11/16. Wilson(8, 10) = (0.490162, 0.943318)
    # p-l = 0.309838, u-p = 0.143318: sqrt(0.095999 - 2*0.6875*0.309838*0.143318 + 0.020540)
    #   = sqrt(0.095999 - 0.061057 + 0.020540) = sqrt(0.055482) = 0.235546; both ends use the same terms.
    lo, hi = paired_difference_interval(8, 0, 0, 2)
    assert lo == pytest.approx(-0.235546, abs=2e-6)
    assert hi == pytest.approx(0.235546, abs=2e-6)
    # All right: a margin is empty so phi = 0; Wilson(10, 10) = (10/(10+z^2), 1)
    # -> interval = +-(1 - 10/(10+z^2)) = +-z^2/(10+z^2) = +-0.277533.
    lo, hi = paired_difference_interval(10, 0, 0, 0)
    assert (lo, hi) == (pytest.approx(-Z2 / (10 + Z2)), pytest.approx(Z2 / (10 + Z2)))


def test_paired_interval_all_flipped():
    # Reference right on all 4, candidate wrong on all 4: d = -1, phi = 0 (empty margins).
    # Cand: Wilson(0, 4) = (0, z^2/(4+z^2) = 0.489891); ref: Wilson(4, 4) = (4/(4+z^2) = 0.510109, 1).
    # lower = -1 - sqrt((0 - 0)^2 + (1 - 1)^2) = -1
    # upper = -1 + sqrt((1 - 0.510109)^2 + (0.489891 - 0)^2) = -1 + sqrt(2) * 0.489891 = -0.307190
    lo, hi = paired_difference_interval(0, 0, 4, 0)
    assert lo == -1.0
    assert hi == pytest.approx(-0.307190, abs=2e-6)


# --- compute_drift -----------------------------------------------------------------------------------------

def test_flips_agreement_and_paired_statistics():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2])
    # rows 0-5 both right; 6 ref right/cand wrong (b); 7-9 ref wrong/cand right (c);
    # 10 both wrong with the same answer (agree); 11 both wrong with different answers (flip).
    ref_pred = [0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 7, 3]
    cand_pred = [0, 1, 2, 3, 4, 5, 0, 7, 8, 9, 7, 4]
    names = [f"img{i}" for i in range(12)]
    r = compute_drift(onehot(ref_pred), onehot(cand_pred), labels, names)
    assert r.flipped == 5 and r.flipped_indices == [6, 7, 8, 9, 11]
    assert r.flipped_names == ["img6", "img7", "img8", "img9", "img11"]
    assert r.agreement == pytest.approx(7 / 12)
    assert r.agreement_ci == [pytest.approx(0.319511, abs=2e-6), pytest.approx(0.806740, abs=2e-6)]
    assert (r.ref_right_cand_wrong, r.ref_wrong_cand_right) == (1, 3)
    assert r.reference_top1 == pytest.approx(7 / 12) and r.candidate_top1 == pytest.approx(9 / 12)
    assert r.top1_delta == pytest.approx((3 - 1) / 12)  # mean of d_i = correct_cand - correct_ref
    assert r.top1_delta_ci == [pytest.approx(-0.175820, abs=2e-6), pytest.approx(0.462045, abs=2e-6)]
    assert r.mcnemar_p == pytest.approx(0.625)
    assert r.finite and r.nonfinite_values == 0
    json.dumps(r.to_dict(), allow_nan=False)  # record-ready: numbers only, no NaN


def test_identical_logits_b_equals_c_equals_zero():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 0])
    logits = onehot([0, 1, 2, 3, 4, 5, 6, 7, 1, 2])  # 8 right, 2 wrong
    r = compute_drift(logits, logits.copy(), labels)
    assert r.flipped == 0 and r.agreement == 1.0 and r.agreement_ci[1] == 1.0
    assert r.agreement_ci[0] == pytest.approx(10 / (10 + Z2))
    assert r.top1_delta == 0.0 and r.mcnemar_p == 1.0
    assert r.top1_delta_ci == [pytest.approx(-0.235546, abs=2e-6), pytest.approx(0.235546, abs=2e-6)]
    assert r.max_abs_diff == 0.0 and r.cosine_min == 1.0


def test_all_flipped():
    labels = np.array([1, 2, 3, 4])
    r = compute_drift(onehot([1, 2, 3, 4]), onehot([0, 0, 0, 0]), labels)
    assert r.flipped == 4 and r.agreement == 0.0
    assert r.agreement_ci == [0.0, pytest.approx(Z2 / (4 + Z2))]
    assert r.top1_delta == -1.0
    assert r.top1_delta_ci == [-1.0, pytest.approx(-0.307190, abs=2e-6)]
    assert r.mcnemar_p == pytest.approx(0.125)


def test_logit_differences_and_cosine():
    ref = np.array([[3.0, 4.0], [1.0, 2.0]], np.float32)
    cand = np.array([[4.0, 3.0], [1.0, 2.0]], np.float32)
    r = compute_drift(ref, cand)
    # row 0: cos = (12 + 12) / (5 * 5) = 0.96, |diff| = (1, 1); row 1 identical.
    assert r.cosine_min == pytest.approx(0.96) and r.cosine_mean == pytest.approx(0.98)
    assert r.max_abs_diff == 1.0 and r.mean_abs_diff == pytest.approx(0.5)
    assert r.flipped == 1  # row 0's argmax moves from class 1 to class 0
    assert not r.labelled and r.top1_delta is None and r.mcnemar_p is None


def test_zero_rows_cosine():
    zero = np.zeros((1, 3), np.float32)
    assert compute_drift(zero, zero).cosine_min == 1.0
    assert compute_drift(zero, np.ones((1, 3), np.float32)).cosine_min == 0.0


def test_top5():
    # 7 classes. Row 0: label 6, ranks of ref: 0>1>2>3>6>... -> label 5th -> top-5 hit;
    # candidate ranks 0>1>2>3>4>6 -> label 6th -> miss. Row 1: label 0 is top-1 for both.
    ref = np.array([[7, 6, 5, 4, 1, 0, 2], [9, 1, 2, 3, 4, 5, 6]], np.float32)
    cand = np.array([[7, 6, 5, 4, 3, 0, 2], [9, 1, 2, 3, 4, 5, 6]], np.float32)
    r = compute_drift(ref, cand, np.array([6, 0]))
    assert r.reference_top5 == 1.0 and r.candidate_top5 == 0.5
    assert r.reference_top1 == 0.5 and r.candidate_top1 == 0.5


def test_nonfinite_candidate_is_flagged_not_nan():
    ref = onehot([0, 1, 2, 3])
    cand = ref.copy()
    cand[1, 4] = np.nan
    cand[2, 2] = np.inf  # an Inf at the "right" class is still not a valid answer
    r = compute_drift(ref, cand, np.array([0, 1, 2, 3]))
    assert not r.finite
    assert (r.nonfinite_values, r.nonfinite_images, r.reference_nonfinite_values) == (2, 2, 0)
    assert r.flipped == 2 and r.flipped_indices == [1, 2]
    assert r.candidate_top1 == 0.5 and r.top1_delta == -0.5
    assert r.compared_images == 2 and r.max_abs_diff == 0.0
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in d.values())
    gate = evaluate_gates(r, "fp32")
    assert gate["passed"] is False and gate["checks"][0]["metric"] == "nonfinite_values"


def test_all_rows_nonfinite():
    cand = np.full((3, 4), np.nan, np.float32)
    r = compute_drift(onehot([0, 1, 2], 4), cand)
    assert r.compared_images == 0 and r.max_abs_diff is None and r.cosine_min is None
    assert r.agreement == 0.0 and r.nonfinite_images == 3
    json.dumps(r.to_dict(), allow_nan=False)


def test_flipped_listing_is_capped():
    r = compute_drift(onehot([1] * 20), onehot([0] * 20), max_listed=5)
    assert r.flipped == 20 and r.flipped_indices == [0, 1, 2, 3, 4] and r.flipped_truncated


def test_shape_and_label_errors():
    with pytest.raises(ValueError, match="N, C"):
        compute_drift(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="labels"):
        compute_drift(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0, 3]))


# --- gates -------------------------------------------------------------------------------------------------

def test_gates_pass_and_fail():
    ref = np.array([[3.0, 4.0], [1.0, 2.0]], np.float32)
    near = ref + np.float32(5e-5)
    passed = evaluate_gates(compute_drift(ref, near), "fp32")
    assert passed["passed"] is True
    assert [c["metric"] for c in passed["checks"]] == ["nonfinite_values", "agreement", "max_abs_diff"]

    far = compute_drift(ref, ref + np.float32(1e-3))
    failed = evaluate_gates(far, "fp32")
    assert failed["passed"] is False
    bad = [c for c in failed["checks"] if not c["passed"]]
    assert [c["metric"] for c in bad] == ["max_abs_diff"]
    assert bad[0]["value"] == pytest.approx(1e-3, rel=1e-3) and bad[0]["threshold"] == 1e-4

    # cosine gates the per-image minimum: row 0 has cosine 0.96.
    flipped = compute_drift(ref, np.array([[4.0, 3.0], [1.0, 2.0]], np.float32))
    fp16 = evaluate_gates(flipped, "fp16")
    assert fp16["passed"] is False
    assert {c["metric"]: c["passed"] for c in fp16["checks"]} == {
        "nonfinite_values": True, "agreement": False, "cosine": False}
    json.dumps(fp16, allow_nan=False)


def test_gates_custom_and_missing_metrics():
    r = compute_drift(onehot([0, 1]), onehot([0, 1]))  # no labels -> no top1_delta
    out = evaluate_gates(r.to_dict(), "int8", {"int8": {"top1_delta": -0.01, "cosine_mean": 0.9}})
    assert out["passed"] is True
    assert out["checks"][1] == {"metric": "top1_delta", "threshold": -0.01, "value": None, "passed": None}
    assert evaluate_gates(r, "fp8", DEFAULT_GATES)["checks"] == [
        {"metric": "nonfinite_values", "threshold": 0, "value": 0, "passed": True}]
    with pytest.raises(ValueError, match="unknown gate"):
        evaluate_gates(r, "fp32", {"fp32": {"accuracy": 1.0}})


# --- logits cache and collection ---------------------------------------------------------------------------

class ScaleRuntime:
    """A minimal adapter following runtimes/base.py's prepare -> run -> outputs protocol at a fixed batch."""

    name = "scale"

    def __init__(self, batch: int):
        self.batch = batch
        self.calls = 0
        self.artifact = type("A", (), {"input_name": "x", "output_name": "y"})()

    def prepare(self, feeds):
        assert feeds["x"].shape[0] == self.batch  # the harness must pad to the fixed batch
        self._x = feeds["x"]

    def run(self):
        self.calls += 1
        self._y = self._x.reshape(self._x.shape[0], -1)[:, :10] * 2.0

    def outputs(self):
        return {"y": self._y}


def test_collect_logits_pads_and_drops():
    ds = SyntheticDataset(count=10, input_shape=(3, 4, 4), seed=1)
    rt = ScaleRuntime(batch=4)
    logits = collect_logits(rt, ds, batch=4)
    assert rt.calls == 3 and logits.values.shape == (10, 10) and logits.labels is None
    assert logits.names == ds.names()
    expected = np.stack([ds.image(i).reshape(-1)[:10] * 2.0 for i in range(10)])
    np.testing.assert_array_equal(logits.values, expected)


def test_reference_logits_cache_roundtrip(tmp_path):
    ds = SyntheticDataset(count=6, input_shape=(3, 4, 4), seed=0)
    computed = []

    def compute(dataset):
        computed.append(1)
        return collect_logits(ScaleRuntime(batch=4), dataset, batch=4)

    parts = {"model": "LeViT_128S", "weights": "seeded:0", "paddle_model_sha256": "abc"}
    first, first_hit = reference_logits(ds, compute, tmp_path, parts)
    second, second_hit = reference_logits(ds, compute, tmp_path, parts)
    assert len(computed) == 1 and (first_hit, second_hit) == (False, True)
    np.testing.assert_array_equal(first.values, second.values)
    assert second.names == ds.names()
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"LeViT_128S-{cache_key(parts, ds.fingerprint)}.npz"]  # no temp left

    # Other weights or other data -> other key -> recomputed.
    reference_logits(ds, compute, tmp_path, {**parts, "weights": "official"})
    reference_logits(SyntheticDataset(count=6, input_shape=(3, 4, 4), seed=1), compute, tmp_path, parts)
    assert len(computed) == 3

    # A corrupt cache file is replaced, not trusted.
    files[0].write_bytes(b"garbage")
    third, hit = reference_logits(ds, compute, tmp_path, parts)
    assert len(computed) == 4 and hit is False
    np.testing.assert_array_equal(third.values, first.values)


def test_compare_logits_aligns_by_name():
    ref = Logits(onehot([0, 1, 2]), ["a", "b", "c"], np.array([0, 1, 2]))
    cand = Logits(onehot([2, 0]), ["c", "a"])  # "b" skipped on the candidate side, order differs
    r = compare_logits(ref, cand)
    assert r.n == 2 and r.flipped == 0 and r.reference_top1 == 1.0


@pytest.mark.slow
def test_paddle_reference_vs_ort_on_tiny_model(tiny_artifact, tmp_path):
    """Real adapters: Paddle Inference reference (cached) against ONNX Runtime, batch 4 over 10 images."""
    from core.artifact import Artifact
    from runtimes import get_runtime
    from runtimes.base import RuntimeOptions

    artifact = Artifact.from_manifest(tiny_artifact)
    ds = SyntheticDataset(count=10, input_shape=(3, 32, 32), seed=0)

    def run(name: str, dataset) -> Logits:
        with get_runtime(name)(RuntimeOptions(batch=4, threads=1)) as rt:
            rt.load(artifact)
            return collect_logits(rt, dataset, batch=4)

    parts = {"model": artifact.model, "weights": "seeded:0", "onnx_sha256": artifact.sha256}
    ref, _ = reference_logits(ds, lambda d: run("paddle", d), tmp_path, parts)
    cand = run("ort", ds)
    assert ref.values.shape == cand.values.shape == (10, 10)
    drift = compare_logits(ref, cand)
    assert drift.finite and drift.agreement == 1.0 and drift.max_abs_diff < 1e-4
    assert evaluate_gates(drift, "fp32")["passed"] is True
    # The cached reference comes back unchanged.
    again, hit = reference_logits(ds, lambda d: pytest.fail("recomputed despite a cache hit"), tmp_path, parts)
    assert hit
    np.testing.assert_array_equal(again.values, ref.values)
