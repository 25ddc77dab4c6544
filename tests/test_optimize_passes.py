"""The graph optimisation passes on small synthetic ONNX graphs (no paddle): each pass keeps the function and
does its rewrite; the driver checks every pass and names the one that moves the outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.optimize import attention, batchnorm, cleanup, driver, extra, patches
from export.optimize.driver import OptimizeError, optimize
from export.optimize.graph import opset_of
from export.optimize.levels import PORTABLE_PASSES, LevelError, check_level, check_runtime, folder_variant

RNG = np.random.default_rng(0)


def _model(nodes, inits, in_shape, out_name="y", opset=17, in_name="x"):
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)  # give the output its inferred type and shape
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    return model


def _run(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _same(before, after, shape, tol=1e-5):
    for batch in (1, 3):
        x = RNG.standard_normal((batch, *shape[1:])).astype(np.float32)
        np.testing.assert_allclose(_run(after, x), _run(before, x), atol=tol, rtol=1e-5)
    onnx.checker.check_model(after, full_check=True)
    assert opset_of(after) == opset_of(before)


def _bn(name, c):
    return {
        f"{name}_s": RNG.uniform(0.5, 2, c).astype(np.float32),
        f"{name}_b": RNG.standard_normal(c).astype(np.float32),
        f"{name}_m": RNG.standard_normal(c).astype(np.float32),
        f"{name}_v": RNG.uniform(0.5, 2, c).astype(np.float32),
    }


def _bn_node(name, x, y):
    return helper.make_node("BatchNormalization", [x, f"{name}_s", f"{name}_b", f"{name}_m", f"{name}_v"], [y],
                            epsilon=1e-5)


def ops(model):
    return [n.op_type for n in model.graph.node]


def _levit_linear_bn(n: int, k: int, c: int):
    """LeViT's Linear + BN1D as paddle2onnx writes it: MatMul -> Reshape[-1, C] -> BN -> Reshape[-1, N, C]."""
    inits = {"w": RNG.standard_normal((k, c)).astype(np.float32), "s1": np.array([-1, c], np.int64),
             "s2": np.array([-1, n, c], np.int64), **_bn("bn", c)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Reshape", ["m", "s1"], ["r"]),
             _bn_node("bn", "r", "b"), helper.make_node("Reshape", ["b", "s2"], ["y"])]
    return _model(nodes, inits, ["batch", n, k])


def test_bn_across_reshape_into_matmul_then_reshapes_collapse():
    """LeViT's Linear + BN1D: MatMul -> Reshape[-1, C] -> BN -> Reshape[-1, N, C]."""
    n, k = 6, 8
    model = _levit_linear_bn(n, k, 5)
    out, reports = optimize(model, "portable")
    _same(model, out, [1, n, k])
    assert ops(out) == ["MatMul", "Add"], ops(out)


def test_bn_across_reshape_with_existing_bias():
    n, k, c = 4, 3, 6
    inits = {"w": RNG.standard_normal((k, c)).astype(np.float32), "bias": RNG.standard_normal(c).astype(np.float32),
             "s1": np.array([-1, c], np.int64), **_bn("bn", c)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["bias", "m"], ["a"]),
             helper.make_node("Reshape", ["a", "s1"], ["r"]), _bn_node("bn", "r", "y")]
    model = _model(nodes, inits, ["batch", n, k])
    out = batchnorm.fold_batchnorm(model)
    _same(model, out, [1, n, k])
    assert "BatchNormalization" not in ops(out) and ops(out).count("Add") == 1


def test_bn_not_folded_when_channel_is_not_last_axis():
    """BN on a 3-D [B, C, L] tensor normalises axis 1, which is not the MatMul's column: must stay."""
    inits = {"w": RNG.standard_normal((4, 4)).astype(np.float32), **_bn("bn", 3)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), _bn_node("bn", "m", "y")]
    model = _model(nodes, inits, ["batch", 3, 4])
    out = batchnorm.fold_batchnorm(model)
    assert "BatchNormalization" in ops(out)
    _same(model, out, [1, 3, 4])


def test_bn_into_conv_and_gemm_and_next_matmul():
    inits = {"cw": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), **_bn("b1", 4),
             "gb": RNG.standard_normal((5, 4)).astype(np.float32), "gc": RNG.standard_normal(5).astype(np.float32),
             **_bn("b2", 5), **_bn("b3", 5), "mw": RNG.standard_normal((5, 7)).astype(np.float32),
             "mb": RNG.standard_normal(7).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]), _bn_node("b1", "c", "cb"),
        helper.make_node("GlobalAveragePool", ["cb"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "gb", "gc"], ["g"], transB=1, beta=0.5), _bn_node("b2", "g", "gbn"),
        _bn_node("b3", "gbn", "h"),  # BN -> MatMul(+Add): folds into the following MatMul
        helper.make_node("MatMul", ["h", "mw"], ["mm"]), helper.make_node("Add", ["mm", "mb"], ["y"]),
    ]
    model = _model(nodes, inits, ["batch", 3, 8, 8])
    out = batchnorm.fold_batchnorm(model)
    _same(model, out, [1, 3, 8, 8])
    assert "BatchNormalization" not in ops(out), ops(out)


def test_identity_at_graph_output_and_neutral_ops():
    inits = {"zero": np.zeros((), np.float32), "one": np.ones((1,), np.float32)}
    nodes = [helper.make_node("Mul", ["x", "one"], ["a"]), helper.make_node("Add", ["a", "zero"], ["b"]),
             helper.make_node("Relu", ["b"], ["r"]), helper.make_node("Identity", ["r"], ["y"])]
    model = _model(nodes, inits, ["batch", 4])
    out, _ = optimize(model, "portable")
    _same(model, out, [1, 4])
    assert ops(out) == ["Relu"] and out.graph.node[0].output[0] == "y"


def test_neutral_add_that_broadcasts_is_kept():
    inits = {"zero": np.zeros((2, 1, 4), np.float32)}
    nodes = [helper.make_node("Add", ["x", "zero"], ["y"])]
    model = _model(nodes, inits, ["batch", 4])
    assert ops(cleanup.remove_neutral_elementwise(model)) == ["Add"]


def test_reshape_chain_with_copy_dims_and_static_targets():
    inits = {"s1": np.array([-1, 12], np.int64), "s2": np.array([0, 3, 4], np.int64),
             "st": np.array([0], np.int64), "en": np.array([1], np.int64), "m1": np.array([-1], np.int64)}
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["a"]),  # [B, 12]
        helper.make_node("Reshape", ["a", "s2"], ["b"]),  # [B, 3, 4]: 0 copies B, which x has at axis 0 too
        helper.make_node("Shape", ["b"], ["sh"]), helper.make_node("Slice", ["sh", "st", "en"], ["bd"]),
        helper.make_node("Concat", ["bd", "m1"], ["tgt"], axis=0),
        helper.make_node("Reshape", ["b", "tgt"], ["y"]),  # flatten(1) spelled dynamically
    ]
    model = _model(nodes, inits, ["batch", 3, 4])
    out, _ = optimize(model, "portable")
    _same(model, out, [1, 3, 4])
    assert ops(out) == ["Reshape"], ops(out)


def test_transpose_pair_cancels_and_merges():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["b"], ["c"], perm=[0, 1, 3, 2]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 1, 3])]
    model = _model(nodes, {}, ["batch", 2, 3, 4])
    out = cleanup.merge_transposes(model)
    _same(model, out, [1, 2, 3, 4])
    assert ops(out) == ["Transpose"]


def _shape(*dims):
    return np.asarray(dims, np.int64)


def _perms(model):
    return [list(n.attribute[0].ints) for n in model.graph.node if n.op_type == "Transpose"]


def test_mobilevit_unfold_becomes_space_to_depth_and_a_3d_transpose():
    """[B,C,H,W] -> [B*4, N, C] in 2 x 2 patches, as paddle2onnx writes MobileViT's unfold; bit-identical."""
    c, h = 5, 6
    inits = {"six": _shape(-1, c, h // 2, 2, h // 2, 2), "tokens": _shape(-1, (h // 2) ** 2, c)}
    nodes = [helper.make_node("Reshape", ["x", "six"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=patches.UNFOLD),
             helper.make_node("Reshape", ["t", "tokens"], ["y"])]
    model = _model(nodes, inits, ["batch", c, h, h])
    out = patches.split_patch_transposes(model)
    _same(model, out, [1, c, h, h], tol=0)
    assert ops(out) == ["SpaceToDepth", "Reshape", "Transpose", "Reshape"] and _perms(out) == [[0, 2, 1]]
    nodes[-1] = helper.make_node("Relu", ["t"], ["y"])  # a reader that needs the 6-D shape itself
    model = _model(nodes, inits, ["batch", c, h, h])
    out = patches.split_patch_transposes(model)
    _same(model, out, [1, c, h, h], tol=0)
    assert ops(out) == ["SpaceToDepth", "Reshape", "Transpose", "Reshape", "Relu"]


def test_mobilevit_fold_becomes_two_cheap_transposes():
    c, n = 5, 3
    inits = {"six": _shape(-1, 2, 2, n, n, c), "planes": _shape(-1, c, 2 * n, 2 * n)}
    nodes = [helper.make_node("Reshape", ["x", "six"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=patches.FOLD),
             helper.make_node("Reshape", ["t", "planes"], ["y"])]
    model = _model(nodes, inits, ["batch", 4, n * n, c])  # the 2 x 2 patch positions of each image
    out = patches.split_patch_transposes(model)
    _same(model, out, [1, 4, n * n, c], tol=0)
    assert _perms(out) == [[0, 3, 1, 4, 2, 5], [0, 2, 1]]


def test_onnx_runtime_keeps_the_unfold_and_fold_steps(tmp_path):
    """The point of the pass: ORT's own graph optimisations keep the steps (ORT merges a plain Transpose ->
    Reshape -> Transpose unfold back into the one 6-D Transpose, which it runs several times slower)."""
    c, n = 4, 3
    inits = {"six": _shape(-1, c, n, 2, n, 2), "tokens": _shape(-1, n * n, c),
             "back": _shape(-1, 2, 2, n, n, c), "planes": _shape(-1, c, 2 * n, 2 * n)}
    nodes = [helper.make_node("Reshape", ["x", "six"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=patches.UNFOLD),
             helper.make_node("Reshape", ["t", "tokens"], ["tok"]),
             helper.make_node("Relu", ["tok"], ["act"]),
             helper.make_node("Reshape", ["act", "back"], ["r2"]),
             helper.make_node("Transpose", ["r2"], ["t2"], perm=patches.FOLD),
             helper.make_node("Reshape", ["t2", "planes"], ["y"])]
    model = _model(nodes, inits, ["batch", c, 2 * n, 2 * n])
    out = patches.split_patch_transposes(model)
    _same(model, out, [1, c, 2 * n, 2 * n], tol=0)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "ort.onnx")
    ort.InferenceSession(out.SerializeToString(), so, providers=["CPUExecutionProvider"])
    kept = sorted(tuple(n.attribute[0].ints) for n in onnx.load(str(tmp_path / "ort.onnx")).graph.node
                  if n.op_type == "Transpose")
    assert kept == [(0, 2, 1), (0, 2, 1), (0, 3, 1, 4, 2, 5)], kept  # the steps, not UNFOLD or FOLD again


def test_an_unfold_of_non_square_patches_is_kept_and_said():
    inits = {"six": _shape(-1, 3, 2, 2, 4, 1)}
    nodes = [helper.make_node("Reshape", ["x", "six"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=patches.UNFOLD),
             helper.make_node("Relu", ["t"], ["y"])]
    model = _model(nodes, inits, ["batch", 3, 4, 4])
    out, report = driver.run_pass("split_patch_transposes", patches.split_patch_transposes, model)
    assert ops(out) == ops(model) and "patches are not square" in report.notes[0]


def _attention(q, k, v, out):
    """softmax(q k^T) v, the use the projections feed."""
    return [helper.make_node("Transpose", [k], [k + "T"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", [q, k + "T"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", v], [out])]


def _mobilevit_qkv(n=7, c=8, heads=2, d=3, extra_reader=False):
    """MobileViT's qkv: MatMul + bias -> Reshape [0,0,3,h,-1] -> Transpose [2,0,3,1,4] -> Slice/Squeeze x 3."""
    inits = {"w": RNG.standard_normal((c, 3 * heads * d)).astype(np.float32),
             "b": RNG.standard_normal(3 * heads * d).astype(np.float32), "s": _shape(0, 0, 3, heads, -1),
             "axis0": _shape(0), "sq": _shape(0), "one": _shape(1),
             **{f"i{i}": _shape(i) for i in range(4)}}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Reshape", ["a", "s"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=attention.QKV_TRANSPOSE)]
    for i, part in enumerate("qkv"):
        nodes += [helper.make_node("Slice", ["t", f"i{i}", f"i{i + 1}", "axis0", "one"], [f"{part}5"]),
                  helper.make_node("Squeeze", [f"{part}5", "sq"], [part])]
    nodes += _attention("q", "k", "v", "o" if extra_reader else "y")
    if extra_reader:  # the biased projection is also read by another node: it must stay whole
        nodes += [helper.make_node("ReduceSum", ["a"], ["asum"], keepdims=0),
                  helper.make_node("Add", ["o", "asum"], ["y"])]
    return _model(nodes, inits, ["batch", n, c])


def test_mobilevit_qkv_projection_is_split_per_part():
    model = _mobilevit_qkv()
    out = attention.split_qkv_projection(model)
    _same(model, out, [1, 7, 8])
    assert "Slice" not in ops(out) and "Squeeze" not in ops(out) and ops(out).count("MatMul") == 3 + 2
    assert [list(i.dims) for i in out.graph.initializer if "_weight" in i.name] == [[8, 2 * 3]] * 3
    assert _perms(out)[:3] == [[0, 2, 1, 3]] * 3


def test_a_projection_read_elsewhere_is_not_split():
    model = _mobilevit_qkv(extra_reader=True)
    assert ops(attention.split_qkv_projection(model)) == ops(model)


def test_matmul_bias_to_gemm_3d():
    inits = {"w": RNG.standard_normal((4, 6)).astype(np.float32), "b": RNG.standard_normal(6).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    model = _model(nodes, inits, ["batch", 5, 4])
    out = extra.matmul_bias_to_gemm(model)
    _same(model, out, [1, 5, 4])
    assert ops(out) == ["Reshape", "Gemm", "Reshape"]


@pytest.mark.parametrize("opset", [13, 14, 17])
def test_optimize_keeps_opset_and_reports(opset):
    inits = {"w": RNG.standard_normal((4, 4)).astype(np.float32)}
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("MatMul", ["i", "w"], ["y"])]
    model = _model(nodes, inits, ["batch", 4], opset=opset)
    out, reports = optimize(model, "portable")
    assert opset_of(out) == opset
    assert reports[0].name == "remove_identity" and reports[0].changed == {"Identity": -1}
    assert [r.name for r in reports] == list(PORTABLE_PASSES)


def test_each_pass_is_checked_and_reports_its_change():
    """With check inputs, every pass records how far it moved the outputs (here: float32 rounding at most)."""
    n, k = 6, 8
    model = _levit_linear_bn(n, k, 5)
    x = RNG.standard_normal((2, n, k)).astype(np.float32)
    _, reports = optimize(model, "gemm", check_inputs=x)
    assert [r.name for r in reports] == [*PORTABLE_PASSES, "matmul_bias_to_gemm"]
    assert all(r.max_abs_change is not None and r.max_abs_change <= 1e-5 for r in reports)
    folded = next(r.to_dict() for r in reports if r.name == "fold_batchnorm")
    assert folded["op_delta"] == {"Add": 1, "BatchNormalization": -1} and folded["nodes_before"] == 4


def test_a_pass_that_moves_the_outputs_fails_by_name(monkeypatch):
    def scale_weights(model):
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        w = broken.graph.initializer[0]
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.001, w.name))
        return broken

    monkeypatch.setitem(driver.PASSES, "merge_transposes", scale_weights)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                   {"w": RNG.standard_normal((4, 4)).astype(np.float32)}, ["batch", 4])
    with pytest.raises(OptimizeError, match="pass merge_transposes moved the outputs") as info:
        optimize(model, "portable", check_inputs=RNG.standard_normal((2, 4)).astype(np.float32))
    assert "first moved at tensor 'y' (MatMul node" in str(info.value)  # the layer, not just the pass
    optimize(model, "portable")  # unchecked, the same pass goes through: the check is what catches it


def test_levels_name_their_folders_and_runtimes():
    assert check_level("none").passes == () and folder_variant("portable") == ""
    assert folder_variant("none") == "opt-none" and folder_variant("gemm") == "opt-gemm"
    check_runtime("ort", "ort")
    with pytest.raises(LevelError, match="ort"):
        check_runtime("ort", "ov")
    with pytest.raises(LevelError, match="choose one of none, portable"):
        check_level("fast")


def test_level_is_part_of_the_cache_key_and_the_folder(tmp_path):
    from export.pipeline import cache_key
    from export.request import ExportRequest, artifact_dir

    default = ExportRequest("LeViT_128S", 17, root=tmp_path)
    plain = ExportRequest("LeViT_128S", 17, root=tmp_path, optimize="none")
    assert cache_key(default) != cache_key(plain)
    assert default.out_dir == artifact_dir("LeViT_128S", 17, root=tmp_path)
    assert default.out_dir == tmp_path / "LeViT_128S/seeded/opset17-bdyn"
    assert plain.out_dir == artifact_dir("LeViT_128S", 17, root=tmp_path, optimize="none")
    assert plain.out_dir.name == "opset17-bdyn-opt-none"


def test_bench_asks_for_the_level_and_refuses_a_graph_its_runtime_cannot_run(tmp_path):
    from bench.cell import export_spec
    from bench.request import BenchRequest, Target, UsageError, validate
    from runtimes.base import RuntimeOptions

    def request(runtime, level):
        return BenchRequest(runtime, Target(model="LeViT_128S", artifacts=str(tmp_path), optimize=level),
                            RuntimeOptions(batch=1, threads=1))

    with pytest.raises(UsageError, match="'ort' optimisation level makes a graph for ort only"):
        validate(request("ov", "ort"))
    resolved, _ = validate(request("ort", "none"))
    spec = export_spec(resolved)
    assert spec.command()[-2:] == ["--optimize", "none"] and "--optimize none" in spec.shell_command()
    assert spec.manifest_path.parent.name == "opset17-bdyn-opt-none"
    assert resolved.cell_key != validate(request("ort", "portable"))[0].cell_key


def test_bench_yaml_names_the_level_and_a_bad_one_is_refused(tmp_path):
    from core.yamlio import ConfigError
    from export.config import read_export_config

    config = tmp_path / "bench.yaml"
    config.write_text("export:\n  optimize: gemm\n")
    assert read_export_config(config).optimize == "gemm"
    config.write_text("export:\n  optimize: fast\n")
    with pytest.raises(ConfigError, match="export.optimize.*choose one of none, portable"):
        read_export_config(config)


def test_a_pass_that_breaks_or_crashes_is_named(monkeypatch):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], {}, ["batch", 4])

    def drop_producer(m):
        broken = onnx.ModelProto()
        broken.CopyFrom(m)
        broken.graph.node[0].input[0] = "nowhere"
        return broken

    monkeypatch.setitem(driver.PASSES, "remove_dropout", drop_producer)
    with pytest.raises(OptimizeError, match="pass remove_dropout made an invalid ONNX graph"):
        optimize(model, "portable")
    monkeypatch.setitem(driver.PASSES, "remove_dropout", lambda m: 1 / 0)
    with pytest.raises(OptimizeError, match="pass remove_dropout failed: ZeroDivisionError"):
        optimize(model, "portable")


def test_the_step_limit_scales_with_outputs_above_one():
    """Folding rounds in float32: the allowed change grows with the logits (seeded-calibrated LeViT logits are in
    the tens and fold_batchnorm moved them by 1.4e-4), and never drops below the tolerance itself."""
    small, large = [np.full((2, 10), 0.5, np.float32)], [np.full((2, 10), -40.0, np.float32)]
    assert driver.change_limit(small, 1e-5) == 1e-5
    assert driver.change_limit(large, 1e-5) == pytest.approx(4e-4)
    assert driver.STEP_TOLERANCE == 1e-4  # the parity rule: 1e-4 x max(1, largest |logit|)
    assert driver.change_limit([np.array([np.inf], np.float32)], 1e-5) == 1e-5


def test_the_step_limit_follows_the_models_float32_sensitivity():
    """LeViT_384 with seeded-calibrated weights in miniature: activations far from zero that a BatchNorm with a
    large mean brings back (x near 1e5, mean near 1e5). A one-ulp nudge of the inputs moves the outputs by 1.6e-2,
    and folding the BN, exact in real arithmetic, by 2.3e-2: far above 1e-4 x max(1, |output|), within 4x the
    nudge. The pass goes through, and the manifest's report says why."""
    c, offset = 16, 1e5
    w = (np.eye(c) + 0.01 * RNG.standard_normal((c, c))).astype(np.float32)
    inits = {"w": w, "bn_s": np.ones(c, np.float32), "bn_b": np.zeros(c, np.float32),
             "bn_m": (offset * w.astype(np.float64).sum(0)).astype(np.float32), "bn_v": np.ones(c, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), _bn_node("bn", "m", "y")]
    model = _model(nodes, inits, ["batch", c])
    x = (offset + RNG.standard_normal((4, c))).astype(np.float32)
    outputs = driver.reference_outputs(model, x)
    sensitivity = driver.float32_sensitivity(model, x, outputs)
    assert sensitivity > 10 * driver.change_limit(outputs, driver.STEP_TOLERANCE)
    _, reports = optimize(model, "portable", check_inputs=x)
    (fold,) = [r for r in reports if r.name == "fold_batchnorm"]
    assert driver.change_limit(outputs, driver.STEP_TOLERANCE) < fold.max_abs_change <= fold.change_limit
    assert fold.change_limit == driver.ULP_FACTOR * sensitivity == fold.to_dict()["change_limit"]
    assert fold.to_dict()["float32_sensitivity"] == sensitivity
