"""--weights official: PaddleClas's URL per model, a pinned sha256 checked when one is known, trust on first use
(said in the record) when none is, served here by a local HTTP server the tests start and stop."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from export.models import MODELS, OFFICIAL_SHA256, WEIGHTS_MIRROR_ENV, get_spec
from export.weights import UNPINNED, WeightsError, resolve


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of a local server holding one fake MobileViT_XXS_pretrained.pdparams."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "MobileViT_XXS_pretrained.pdparams").write_bytes(b"weights of the test: not a real pickle")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_every_model_has_an_official_url_and_a_hash_entry(monkeypatch):
    monkeypatch.delenv(WEIGHTS_MIRROR_ENV, raising=False)
    assert set(OFFICIAL_SHA256) == set(MODELS)
    for name in MODELS:
        spec = get_spec(name)
        assert spec.weights_url.endswith(f"/dygraph/{name}_pretrained.pdparams")
        assert spec.weights_sha256 is None or len(spec.weights_sha256) == 64


def test_a_mirror_serves_the_same_file_names(monkeypatch):
    monkeypatch.setenv(WEIGHTS_MIRROR_ENV, "http://mirror.invalid/paddle/")
    assert get_spec("LeViT_384").weights_url == "http://mirror.invalid/paddle/LeViT_384_pretrained.pdparams"


def test_unpinned_official_weights_are_trusted_on_first_use_and_say_so(mirror, tmp_path):
    base, folder = mirror
    url = f"{base}/MobileViT_XXS_pretrained.pdparams"
    path, source = resolve("official", url, cache_dir=tmp_path / "cache")
    described = source.to_dict()
    assert described["kind"] == "official" and described["location"] == url and described["trained"]
    assert described["verified"] is False and described["pinned_sha256"] is None
    assert described["verification"] == UNPINNED
    # later uses check the hash recorded at the first download: a changed cache file is fetched again
    path.write_bytes(b"tampered")
    again, source = resolve("official", url, cache_dir=tmp_path / "cache")
    assert again.read_bytes() == (folder / "MobileViT_XXS_pretrained.pdparams").read_bytes()


def test_a_pinned_hash_is_checked(mirror, tmp_path):
    base, folder = mirror
    url = f"{base}/MobileViT_XXS_pretrained.pdparams"
    good = hashlib.sha256((folder / "MobileViT_XXS_pretrained.pdparams").read_bytes()).hexdigest()
    _, source = resolve("official", url, cache_dir=tmp_path / "ok", pinned_sha256=good)
    assert source.to_dict()["verified"] is True and source.to_dict()["verification"] == "sha256 equals the pinned one"
    with pytest.raises(WeightsError, match=f"has sha256 {good}, not the pinned 0000"):
        resolve("official", url, cache_dir=tmp_path / "bad", pinned_sha256="0" * 64)
    assert not [p for p in (tmp_path / "bad").rglob("*") if p.is_file()]  # nothing kept


def test_an_unreachable_host_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match=r"cannot download http://127\.0\.0\.1:9/.*--weights PATH"):
        resolve("official", "http://127.0.0.1:9/LeViT_128S_pretrained.pdparams", cache_dir=tmp_path)


@pytest.mark.slow
def test_official_path_end_to_end_offline(tmp_path):
    """--weights official through a local mirror: the export loads the served .pdparams, records its URL and hash
    as unverified, and python -m bench accuracy reports top-1 beside PaddleClas's published figure."""
    import paddle
    from conftest import run_module

    from export.models import build_model
    from export.weights import seeded_state_dict

    served = tmp_path / "mirror"
    served.mkdir()
    model = build_model("MobileViT_XXS")
    paddle.save({k: paddle.to_tensor(v) for k, v in seeded_state_dict(model).items()},
                str(served / "MobileViT_XXS_pretrained.pdparams"))
    digest = hashlib.sha256((served / "MobileViT_XXS_pretrained.pdparams").read_bytes()).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {WEIGHTS_MIRROR_ENV: f"http://127.0.0.1:{server.server_port}", "PADDLE_ONNX_BENCH_CACHE": str(tmp_path)}
        results = tmp_path / "acc.jsonl"
        proc = run_module("bench", "accuracy", "--runtime", "ort", "--model", "MobileViT_XXS", "--weights", "official",
                          "--data", str(Path(__file__).resolve().parents[1] / "data" / "imagenet-val-44"), "--quiet",
                          "--artifacts", str(tmp_path / "art"), "--results", str(results), cwd=tmp_path, env=env)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert proc.returncode == 0, proc.stderr
    assert "PaddleClas published top-1 68.67%" in proc.stdout and "trusted on first use" in proc.stdout
    record = json.loads(results.read_text())
    weights = record["model"]["weights"]
    assert weights["kind"] == "official" and weights["sha256"] == digest and weights["verified"] is False
    assert weights["location"].endswith("/MobileViT_XXS_pretrained.pdparams") and weights["pinned_sha256"] is None
    assert record["accuracy"]["n"] == 44 and record["accuracy"]["published_top1"] == 0.6867
    assert record["preprocess"]["pipeline"] == "eval" and record["preprocess"]["channel_order"] == "BGR"
    manifest = json.loads(Path(record["model"]["manifest"]).read_text())
    assert manifest["weights"] == weights and manifest["preprocess"]["pipeline"] == "eval"
