"""Weights: the seeded recipe, .pdparams files from a path, and URLs through a checked local cache."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from core.files import sha256_of
from export.models import build_model
from export.pipeline import run_export
from export.request import ExportRequest
from export.weights import WeightsError, load_weights, resolve, seeded_state_dict, seeded_value

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds Paddle models


def test_seeded_recipe_is_deterministic_and_non_degenerate():
    a, b = seeded_value("head.weight", [1000, 64]), seeded_value("head.weight", [1000, 64])
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert not np.array_equal(a, seeded_value("head.bias", [1000, 64]))  # seeded by the key name
    assert a.std() == pytest.approx(1 / np.sqrt(64), rel=0.05)
    variance = seeded_value("bn._variance", [256])
    assert variance.min() >= 0.5 and variance.max() <= 1.5


@pytest.fixture(scope="module")
def pdparams(tmp_path_factory):
    """MobileViT_XXS's seeded weights saved as a real .pdparams file."""
    import paddle

    path = tmp_path_factory.mktemp("weights") / "MobileViT_XXS_pretrained.pdparams"
    model = build_model("MobileViT_XXS")
    paddle.save({k: paddle.to_tensor(v) for k, v in seeded_state_dict(model).items()}, str(path))
    return path


def test_pdparams_file_loads_and_is_recorded(pdparams):
    model = build_model("MobileViT_XXS")
    source = load_weights(model, str(pdparams), "unused")
    assert source.to_dict() == {
        "kind": "file",
        "location": str(pdparams),
        "sha256": sha256_of(pdparams),
        "trained": True,
    }
    expected = seeded_state_dict(build_model("MobileViT_XXS"))
    for key, tensor in model.state_dict().items():
        assert np.array_equal(tensor.numpy(), expected[key]), key


def test_a_wrong_shape_names_the_key(pdparams, tmp_path):
    import paddle

    state = paddle.load(str(pdparams))
    key = list(state)[-1]
    state[key] = paddle.zeros([3, 3])
    wrong = tmp_path / "wrong.pdparams"
    paddle.save(state, str(wrong))
    with pytest.raises(WeightsError, match=rf"{key} has shape \[3, 3\], the model needs"):
        load_weights(build_model("MobileViT_XXS"), str(wrong), "unused")


def test_export_with_a_weights_file_records_its_hash(pdparams, tmp_path):
    request = ExportRequest("MobileViT_XXS", 17, weights=str(pdparams), root=tmp_path, images=None)
    manifest = json.loads(run_export(request).manifest_path.read_text())
    assert manifest["weights"]["kind"] == "file" and manifest["weights"]["sha256"] == sha256_of(pdparams)
    assert manifest["parity"]["seeded"]["passed"]
    assert f"file-{sha256_of(pdparams)[:12]}" in str(next(tmp_path.rglob("model.onnx")))


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = 0

    def do_GET(self):  # http.server's name
        type(self).requests += 1
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


def test_url_is_downloaded_once_into_a_checked_cache(pdparams, tmp_path):
    handler = functools.partial(_CountingHandler, directory=str(pdparams.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{pdparams.name}"
        path, source = resolve(url, "unused", cache_dir=tmp_path)
        assert path.read_bytes() == pdparams.read_bytes()
        assert source.location == url and source.sha256 == sha256_of(pdparams)
        assert resolve(url, "unused", cache_dir=tmp_path)[0] == path
        assert _CountingHandler.requests == 1  # the second call was a cache hit
        path.write_bytes(b"tampered")  # fails the integrity check: fetched again
        assert resolve(url, "unused", cache_dir=tmp_path)[1].sha256 == sha256_of(pdparams)
        assert _CountingHandler.requests == 2
        with pytest.raises(WeightsError, match=r"cannot download .*missing\.pdparams.*--weights PATH"):
            resolve(url.replace(pdparams.name, "missing.pdparams"), "unused", cache_dir=tmp_path)
    finally:
        server.shutdown()
    assert not list(tmp_path.rglob("*.part"))


def test_seeded_weights_are_near_constant_and_calibrated_ones_are_not():
    """Why `seeded-calibrated` exists: on the parity recipe every image gets the same top-1, so parity and
    drift measured on it test little; the calibrated recipe's logits follow the image."""
    import paddle

    from core.datasets import open_dataset
    from export.calibrated_weights import calibrated_state_dict, reestimate_batchnorm
    from export.models import get_spec

    spec = get_spec("MobileViT_XXS")
    images = next(iter(open_dataset(ROOT / "data" / "imagenet-val-44", preprocess=spec.preprocess).batches(44)))[0]

    def logits(model) -> np.ndarray:
        with paddle.no_grad():
            return model(paddle.to_tensor(images)).numpy()

    seeded = build_model("MobileViT_XXS")
    seeded.set_state_dict(seeded_state_dict(seeded))
    seeded.eval()
    calibrated = build_model("MobileViT_XXS")
    calibrated.set_state_dict(calibrated_state_dict(calibrated))
    assert reestimate_batchnorm(calibrated, spec.preprocess) == 125
    flat, varied = logits(seeded), logits(calibrated)
    spread = lambda v: float((v - v.mean(0)).std() / v.std())  # noqa: E731 - share of image-dependent variance
    assert len(set(flat.argmax(1))) == 1 and spread(flat) < 1e-5
    assert len(set(varied.argmax(1))) >= 5 and spread(varied) > 0.3
    assert not calibrated.training and all(not layer.training for layer in calibrated.sublayers())
