"""benchmarks/speed_targets.py: the targets the benchmark scripts print, judged only where the CPU allows."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

from core.cpu import cpu_flags

AVX2 = cpu_flags("flags: fpu avx2 fma")
VNNI = cpu_flags("flags: fpu avx2 avx512f avx512_vnni avx512_bf16")
AMX = cpu_flags("flags: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16")


@pytest.fixture(scope="module")
def targets():
    return load_benchmark("speed_targets")


def test_int8_ratios_are_judged_only_with_an_int8_dot_product(targets):
    verdict = targets.ratio_verdict
    assert verdict("ort", "int8", 8, "LeViT", 0.74, VNNI) == "target <= 0.75x: met"
    assert verdict("ort", "int8", 8, "MobileViT", 0.80, VNNI) == "target <= 0.75x: MISSED"
    assert verdict("ort", "int8", 1, "MobileViT", 1.05, VNNI) == "target <= 1.0x: MISSED"  # never slower at b1
    assert verdict("ov", "int8", 8, "MobileViT", 0.59, VNNI) == "target <= 0.6x: met"
    assert verdict("ort", "int8", 8, "LeViT", 0.90, AVX2) == "target <= 0.75x not judged (no VNNI/AMX-INT8)"
    assert verdict("ov", "int8", 1, "MobileViT", 1.2, VNNI) == ""  # no OpenVINO target at batch 1
    assert verdict("ort", "fp32", 8, "LeViT", None, VNNI) == ""


def test_bf16_is_judged_on_amx_only(targets):
    assert "not judged (no AMX-BF16)" in targets.ratio_verdict("ov", "bf16", 8, None, 0.5, VNNI)
    assert targets.ratio_verdict("ov", "bf16", 8, None, 0.5, AMX) == "target <= 0.7x: met"


def test_float_islands_count_quantize_ops_and_float_compute_not_int8_kernels_or_data_moves(targets):
    ops = {"QLinearConv": 40.0, "QLinearMatMul": 20.0, "QGemm": 10.0, "MatMulIntegerToFloat": 5.0,
           "QuantizeLinear": 6.0, "DequantizeLinear": 4.0, "Softmax": 5.0, "LayerNormalization": 5.0,
           "Transpose": 3.0, "Reshape": 2.0}
    share, islands = targets.float_island_share(ops)
    assert set(islands) == {"QuantizeLinear", "DequantizeLinear", "Softmax", "LayerNormalization"}
    assert share == pytest.approx(20.0 / 100.0)
    assert targets.island_verdict(share, AVX2) == "float islands 20%: target <= 10% MISSED"
    assert "this CPU has it: the ratios are judged" in targets.island_verdict(share, VNNI)
    assert targets.float_island_share({}) == (0.0, {})


def test_fp32_graph_targets(targets):
    assert targets.gemm_share_verdict("MobileViT", 0.71) == ">= 70%: met"
    assert targets.gemm_share_verdict("MobileViT", 0.55) == ">= 70%: MISSED"
    assert targets.gemm_share_verdict("LeViT", 0.55) == ""
    assert targets.noise_verdict("LeViT", 1.03, 1.05).endswith("met")
    assert targets.noise_verdict("LeViT", 1.09, 1.05).endswith("MISSED")
    assert targets.noise_verdict("MobileViT", 1.09, 1.05) == ""


def test_paddle_ratio_is_judged_only_when_paddle_ran_at_its_best(targets):
    best = {"onednn": True, "ir_optim": True, "threads": 2}
    assert targets.paddle_verdict(6.2, best) == "target >= 6x: met"
    assert targets.paddle_verdict(5.4, best) == "target >= 6x: MISSED"
    assert targets.paddle_verdict(9.0, {**best, "onednn": False}) == \
        "target >= 6x not judged (Paddle ran without onednn)"


def test_paddle_ratio_is_against_one_configuration_round_by_round():
    """The best configuration is the one of lowest median, and every round compares Paddle with it (not with
    whichever configuration happened to be fastest in that round)."""
    paddle = load_benchmark("paddle_vs_best")
    best = {"paddle": [12.0, 12.0, 12.0], "ov portable": [2.0, 2.4, 2.0], "ort portable": [2.2, 2.1, 2.2]}
    row = paddle.summarize("M", best, {"onednn": True, "ir_optim": True, "threads": 2})
    assert row["best"] == "ov portable" and row["best_ms"] == 2.0
    assert row["ratio"] == pytest.approx(6.0) and row["lo"] == pytest.approx(5.0) and row["hi"] == pytest.approx(6.0)
    assert row["verdict"] == "target >= 6x: met"
    assert "| M | 12.00 | onednn True, ir_optim True, threads 2 | ov portable |" in "\n".join(paddle.markdown([row]))


def test_the_paddle_ceiling_says_when_no_exact_fp32_graph_can_reach_the_target():
    paddle = load_benchmark("paddle_vs_best")
    best = {"paddle": [12.0, 12.0, 12.0], "ov portable": [4.0, 4.0, 4.0]}
    row = paddle.summarize("M", best, {"onednn": True, "ir_optim": True, "threads": 2})
    low = paddle.with_ceiling(row, gflop_per_image=1.0, peak_gflops=200.0)  # 5 ms at the peak: at most 2.4x
    assert low["at_peak_ms"] == pytest.approx(5.0) and low["ceiling"] == pytest.approx(2.4)
    assert "out of reach for an exact fp32 graph here: even at the sgemm peak 2.4x" in low["ceiling_note"]
    assert "| 2.4x at 5.00 ms: out of reach" in "\n".join(paddle.markdown([low]))
    high = paddle.with_ceiling(row, gflop_per_image=0.2, peak_gflops=200.0)  # 1 ms: up to 12x
    assert high["ceiling"] == pytest.approx(12.0) and high["ceiling_note"].startswith("reachable in principle")


def test_a_target_above_the_ceiling_at_the_fma_peak_is_out_of_reach_on_this_cpu():
    paddle = load_benchmark("paddle_vs_best")
    best = {"paddle": [12.0, 12.0, 12.0], "ov portable": [4.0, 4.0, 4.0]}
    row = paddle.summarize("M", best, {"onednn": True, "ir_optim": True, "threads": 2})
    # 1 GFLOP an image: 5 ms at a 200 GFLOP/s sgemm reading (2.4x), 4 ms at a 250 GFLOP/s FMA peak (3.0x)
    capped = paddle.with_ceiling(row, gflop_per_image=1.0, peak_gflops=200.0, fma_gflops=250.0)
    assert capped["at_fma_peak_ms"] == pytest.approx(4.0) and capped["fma_ceiling"] == pytest.approx(3.0)
    assert capped["ceiling_note"] == ("out of reach on this CPU: even with every multiply-add of the graph at its "
                                      "FMA peak 3.0x (only fewer multiply-adds, e.g. Winograd convolutions, could "
                                      "pass it)")
    assert "| 2.4x at 5.00 ms; 3.0x at 4.00 ms at the FMA peak: out of reach on this CPU" in "\n".join(
        paddle.markdown([capped]))
    # under the target at the sgemm reading but not at the FMA peak: a better kernel could still reach it
    between = paddle.with_ceiling(row, gflop_per_image=0.45, peak_gflops=200.0, fma_gflops=400.0)  # 5.3x, 10.7x
    assert between["ceiling_note"].startswith("out of reach for an exact fp32 graph here: even at the sgemm peak")


def test_the_fma_probe_measures_this_cpu_on_its_widest_vectors():
    """benchmarks/fma_peak.c built with this machine's C compiler and run: a real figure, on the ISA the CPU has."""
    probe = load_benchmark("fma_peak")
    try:
        one, two = probe.fma_peak(1), probe.fma_peak(2)
    except probe.FmaProbeUnavailable as exc:
        pytest.skip(f"the FMA probe cannot run here: {exc}")
    flags = cpu_flags()
    assert one["isa"] == ("avx512f" if flags.get("avx512f") else "avx2+fma")
    assert one["vector_bits"] == (512 if flags.get("avx512f") else 256) and two["threads"] == 2
    # every x86 core with FMA does 16 to 64 fp32 flop a cycle (one 256-bit FMA pipe to two 512-bit ones); the
    # clock read from dependent adds makes the figure checkable against that, loosely: VMs share cores
    assert 8 <= one["flop_per_cycle_one_thread"] <= 80
    assert 0.5 <= one["clock_ghz"] <= 6.5 and two["gflops"] > 0


def test_the_fma_probe_says_why_when_there_is_no_c_compiler(monkeypatch, capsys):
    probe = load_benchmark("fma_peak")
    monkeypatch.setattr(probe.shutil, "which", lambda name: None)
    with pytest.raises(probe.FmaProbeUnavailable, match="no C compiler"):
        probe.fma_peak(1)
    assert probe.main(["--threads", "1"]) == 1
    assert capsys.readouterr().err.strip() == ("error: no C compiler (cc, gcc or clang) on PATH to build "
                                               "benchmarks/fma_peak.c")


def test_tune_vs_sweep_calls_a_choice_worse_only_beyond_its_a_a_control_and_by_the_sign_test():
    bench = load_benchmark("tune_vs_sweep")
    assert bench.SIGN_TEST_ROUNDS == 12  # of 15: P(X >= 12) = 0.018, P(X >= 11) = 0.059
    aa = {"aa_ratio": 1.0, "aa_lo": 0.9, "aa_hi": 1.08}
    worse = {"ratio": 1.10, "lo": 0.98, "hi": 1.3, "worse_rounds": 12, **aa}
    assert bench.side_verdict(worse, 0.03).startswith("worse beyond noise")
    assert bench.side_verdict({**worse, "worse_rounds": 11}, 0.03).startswith("within noise side by side")
    assert bench.side_verdict({**worse, "ratio": 1.07}, 0.03).startswith("within noise")  # inside the A/A range
    assert bench.side_verdict({**worse, "ratio": 1.02, **{"aa_hi": 1.01}}, 0.03).startswith("within noise")
