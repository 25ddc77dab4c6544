"""The zoo matches PaddleClas: same state_dict layout, same logits under the seeded weights recipe."""

import json
from pathlib import Path

import numpy as np
import pytest

from export.models import MODELS, UnknownModelError, build_model, get_spec
from export.weights import seeded_state_dict

pytestmark = pytest.mark.slow  # builds Paddle models

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "state_manifest.json").read_text())
EXPECTED = np.load(DATA / "expected_logits.npz")


def test_zoo_lists_the_eight_models():
    assert sorted(MODELS) == sorted(MANIFEST)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModelError, match="known models: LeViT_128S"):
        get_spec("ResNet50")


@pytest.mark.parametrize("name", list(MANIFEST))
def test_state_dict_and_logits_match_paddleclas(name):
    import paddle

    model = build_model(name)
    state = model.state_dict()
    got = [[k, list(t.shape), str(t.dtype).replace("paddle.", "")] for k, t in state.items()]
    assert got == MANIFEST[name]["keys"]
    params = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert params == MANIFEST[name]["params"]

    model.set_state_dict(seeded_state_dict(model))
    model.eval()
    size = get_spec(name).input_size
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x)).numpy()
    expected = EXPECTED[name]
    assert np.abs(logits - expected).max() <= 1e-4
    assert (logits.argmax(1) == expected.argmax(1)).all()
    assert logits.std() > 0.1  # the recipe is non-degenerate
