"""Minimal reproducer of an OpenVINO CPU bug: int8 ReduceMean(keep_dims=False) + BatchNorm fusion applies the
BatchNorm's per-channel parameters by *image* (batch index) instead of by channel.

Found by ``python -m bench explain`` on LeViT (NNCF DEFAULT-preset int8, 0/44 top-1 agreement with fp32): the
head's ``FakeQuantize -> ReduceMean(axis 1, keep_dims=False) -> FakeQuantize -> BatchNormInference`` runs as one
i8 ``Reduce`` layer with the BatchNorm fused in as a post-op, and the result is wrong. This script builds that
4-op chain itself (no download, no project code), compares OpenVINO CPU with numpy, and writes the IR so it
can be attached to an upstream report:

    python benchmarks/ov_reduce_bn_int8_repro.py [--out DIR]    # writes DIR/reduce_bn_int8.xml/.bin

Expected: rel L2 vs numpy ~1e-3 (int8 rounding). Seen with openvino 2026.4.1 on an AVX2 CPU: ~1 (wrong); with
the middle FakeQuantize also made a model output (so the fusion cannot happen) ~1e-3; with the same BatchNorm
parameters on every channel the fused result is right; and the fused output equals "BatchNorm parameters of
channel b applied to image b" to ~1e-3. Exit code 1 when the bug shows, 0 when OpenVINO computes it right.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

BATCH, TOKENS, CHANNELS = 8, 16, 384
IN_RANGE, MID_RANGE, LEVELS, EPS = (-4.0, 4.0), (-1.0, 1.0), 256, 1e-5


def fake_quantize(x: np.ndarray, lo: float, hi: float, levels: int = LEVELS) -> np.ndarray:
    """OpenVINO FakeQuantize with equal input and output ranges."""
    q = np.round((np.clip(x, lo, hi) - lo) / (hi - lo) * (levels - 1))
    return (q / (levels - 1) * (hi - lo) + lo).astype(np.float32)


def bn_params(rng: np.random.Generator, uniform: bool) -> tuple[np.ndarray, ...]:
    if uniform:
        return tuple(np.full(CHANNELS, v, np.float32) for v in (0.3, 0.1, 0.05, 1.0))
    gamma = rng.normal(0, 0.3, CHANNELS).astype(np.float32)
    beta = rng.normal(0, 0.1, CHANNELS).astype(np.float32)
    mean = rng.normal(0, 0.1, CHANNELS).astype(np.float32)
    var = rng.uniform(0.5, 1.5, CHANNELS).astype(np.float32)
    return gamma, beta, mean, var


def build(params: tuple[np.ndarray, ...]):
    """Parameter [8,16,384] -> FQ -> ReduceMean(axis 1, keep_dims=False) -> FQ -> BatchNormInference."""
    import openvino as ov
    from openvino import opset13 as ops

    def fq(node, lo, hi, name):
        lo_c, hi_c = ops.constant(np.float32(lo)), ops.constant(np.float32(hi))
        out = ops.fake_quantize(node, lo_c, hi_c, lo_c, hi_c, LEVELS)
        out.set_friendly_name(name)
        return out

    x = ops.parameter([BATCH, TOKENS, CHANNELS], ov.Type.f32, name="x")
    q_in = fq(x, *IN_RANGE, "fq_input")
    mean = ops.reduce_mean(q_in, ops.constant(np.array([1], np.int64)), keep_dims=False)
    mean.set_friendly_name("reduce_mean")
    q_mid = fq(mean, *MID_RANGE, "fq_mid")
    gamma, beta, mu, var = params
    bn = ops.batch_norm_inference(q_mid, ops.constant(gamma), ops.constant(beta), ops.constant(mu),
                                  ops.constant(var), EPS)
    bn.set_friendly_name("batch_norm")
    return ov.Model([bn.output(0)], [x], "reduce_bn_int8"), q_mid


def numpy_reference(x: np.ndarray, params: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    m = fake_quantize(fake_quantize(x, *IN_RANGE).mean(axis=1), *MID_RANGE)
    gamma, beta, mu, var = params
    return gamma * (m - mu) / np.sqrt(var + EPS) + beta, m


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(core, params, x: np.ndarray, expose_mid: bool) -> tuple[np.ndarray, list[str]]:
    model, q_mid = build(params)
    if expose_mid:  # a second output after the middle FakeQuantize makes the fusion impossible
        model.add_outputs([q_mid.output(0)])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind not in ("Input", "Output", "Const"):
            layers.append(f"{kind} {info['runtimePrecision'].astype(str)} [{info['originalLayersNames'].astype(str)}]")
    return compiled(x)[compiled.outputs[0]], layers


def main(argv: list[str] | None = None) -> int:
    import openvino as ov

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="also write the IR here, for an upstream report")
    args = p.parse_args(argv)
    print(f"openvino {ov.get_version()}; python {platform.python_version()}; {platform.machine()}; "
          f"{_cpu_name()}")
    core, rng = ov.Core(), np.random.default_rng(0)
    x = rng.uniform(-3, 3, (BATCH, TOKENS, CHANNELS)).astype(np.float32)
    params = bn_params(rng, uniform=False)
    expected, m = numpy_reference(x, params)
    fused, layers = run(core, params, x, expose_mid=False)
    unfused, _ = run(core, params, x, expose_mid=True)
    uniform = bn_params(rng, uniform=True)
    uniform_fused, _ = run(core, uniform, x, expose_mid=False)
    gamma, beta, mu, var = params
    scale = gamma / np.sqrt(var + EPS)
    rows = np.arange(BATCH)[:, None]  # image b gets the parameters of channel b
    by_image = m * scale[rows] + (beta - mu * scale)[rows]
    print(f"compiled layers: {'; '.join(layers)}")
    print(f"deployed (fused) vs numpy:                         rel L2 {rel(fused, expected):.3g}")
    print(f"middle FakeQuantize exposed (no fusion) vs numpy:  rel L2 {rel(unfused, expected):.3g}")
    print(f"same BatchNorm parameters on every channel:        rel L2 "
          f"{rel(uniform_fused, numpy_reference(x, uniform)[0]):.3g}")
    print(f"deployed vs 'BatchNorm of channel b on image b':   rel L2 {rel(fused, by_image):.3g}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        ov.save_model(build(params)[0], str(args.out / "reduce_bn_int8.xml"))
        print(f"wrote {args.out / 'reduce_bn_int8.xml'}")
    bug = rel(fused, expected) > 0.05
    print("BUG PRESENT: the fused int8 Reduce applies BatchNorm parameters by image index" if bug
          else "not reproduced: OpenVINO computes the fused chain correctly")
    return 1 if bug else 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
