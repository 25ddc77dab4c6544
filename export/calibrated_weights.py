"""The ``seeded-calibrated`` weights: deterministic, no download, and input-sensitive.

The parity recipe (``seeded``) draws every 1-D entry, normalisation scales included, from N(0, 0.1), so each
normalisation layer shrinks the image's signal tenfold and the biases take over: every zoo model then
computes a near-constant function (its logits change by about 3e-7 of their spread from one image to
another, and all 44 evaluation images get the same top-1). Parity and drift measured on such a network test
little: a graph that ignored its input would pass. This recipe keeps the parity recipe for everything else
and makes two changes, so logits depend on the image (MobileViT_XXS: 17 distinct top-1 classes on the 44
evaluation images; see tests/test_weights.py):

1. normalisation scales (the ``weight`` of BatchNorm/LayerNorm/GroupNorm layers) are 1 + N(0, 0.1), seeded by
   name like the rest, except the last BatchNorm of each residual branch, which keeps the parity recipe's
   N(0, 0.1): each branch then adds a small update to its input (the zero-gamma initialisation of deep
   residual networks). With unit scales there too, LeViT's 22 residual blocks amplify float rounding about
   twofold per block and fp32 runtimes disagree by 10 % of the logits: a chaotic network tests nothing either;
2. BatchNorm running statistics are re-estimated on the bundled calibration images
   (``data/imagenet-calib-125``, disjoint from the evaluation images), as after training: a cumulative average
   over fixed batches, every other layer in eval mode (no dropout, no drop-path).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np

from core.datasets import DataError, open_dataset
from core.preprocess import Preprocess
from export.weights import CALIBRATED, WeightsError, seeded_state_dict, seeded_value

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "imagenet-calib-125"
BATCH = 25  # images per BatchNorm-statistics pass: bounded memory for the largest model


def calibration_digest(folder: Path = DEFAULT_CALIBRATION) -> str:
    """Identity of the calibration set (its list file): new images give new weights."""
    list_file = Path(folder) / "val_list.txt"
    if not list_file.is_file():
        raise WeightsError(f"{CALIBRATED} weights need the calibration images: {list_file} not found")
    return hashlib.sha256(list_file.read_bytes()).hexdigest()


def location(folder: Path = DEFAULT_CALIBRATION) -> str:
    return f"seeded-crc32-v1+unit-norm-scales+bn-stats:{calibration_digest(folder)[:12]}"


def norm_layers(model) -> list[tuple[str, object]]:
    import paddle.nn as nn

    kinds = (nn.BatchNorm, nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D, nn.LayerNorm, nn.GroupNorm)
    return [(name, layer) for name, layer in model.named_sublayers() if isinstance(layer, kinds)]


def calibrated_state_dict(model) -> dict[str, np.ndarray]:
    """The parity recipe with unit-centred normalisation scales outside residual-branch ends (step 1)."""
    state = seeded_state_dict(model)
    branch_ends = set(model.residual_branch_norms()) if hasattr(model, "residual_branch_norms") else set()
    for name, layer in norm_layers(model):
        key = f"{name}.weight"
        if getattr(layer, "weight", None) is not None and key in state and name not in branch_ends:
            state[key] = (1.0 + seeded_value(key, list(state[key].shape))).astype(np.float32)
    return state


def reestimate_batchnorm(model, preprocess: Preprocess, folder: Path = DEFAULT_CALIBRATION) -> int:
    """Set every BatchNorm's running mean and variance to their average over the calibration images (step 2);
    returns how many images were used. The model is left in eval mode."""
    import paddle
    import paddle.nn as nn

    batchnorms = [layer for _, layer in norm_layers(model) if not isinstance(layer, nn.LayerNorm | nn.GroupNorm)]
    try:
        dataset = open_dataset(folder, preprocess=preprocess, layout="list")
    except DataError as exc:
        raise WeightsError(f"{CALIBRATED} weights: calibration images: {exc}") from None
    model.eval()
    for layer in batchnorms:
        layer.train()  # only the BatchNorms: dropout and drop-path stay off
    used = 0
    with paddle.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When training, we now always track global mean")
        for number, (images, _, _) in enumerate(dataset.batches(BATCH), start=1):
            for layer in batchnorms:
                # running = m * running + (1 - m) * batch with m = (k - 1) / k: the mean over k batches.
                layer._momentum = (number - 1) / number
            model(paddle.to_tensor(images))
            used += len(images)
    model.eval()
    log.info("re-estimated %d BatchNorm layers on %d calibration images", len(batchnorms), used)
    return used
