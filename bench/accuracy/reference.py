"""Logits for the drift pass: a loaded runtime's over a data set, and Paddle's reference, cached."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.datasets import Dataset
from core.logits import Logits

if TYPE_CHECKING:
    from runtimes.base import Runtime

log = logging.getLogger(__name__)


def collect_logits(runtime: Runtime, dataset: Dataset, batch: int, *, input_name: str | None = None,
                   output_name: str | None = None, progress: Callable[[int], None] | None = None) -> Logits:
    """Run a loaded runtime adapter over ``dataset`` at a fixed ``batch``.

    The last partial batch is padded with copies of its last image (real-looking data, unlike zeros, cannot
    push a low-precision engine into overflow) and the padded rows are dropped from the result.
    """
    artifact = getattr(runtime, "artifact", None)  # set by Runtime.load()
    input_name = input_name or getattr(artifact, "input_name", None)
    output_name = output_name or getattr(artifact, "output_name", None)
    if input_name is None:
        raise ValueError(f"{runtime.name}: no input name; load() the runtime first or pass input_name")
    values, names, labels = [], [], []
    for images, batch_labels, batch_names in dataset.batches(batch):
        count = images.shape[0]
        if count < batch:
            pad = np.repeat(images[-1:], batch - count, axis=0)
            images = np.concatenate([images, pad])
        runtime.prepare({input_name: np.ascontiguousarray(images, dtype=np.float32)})
        runtime.run()
        outputs = runtime.outputs()
        out = outputs[output_name] if output_name in outputs else next(iter(outputs.values()))
        out = np.asarray(out)
        if out.shape[0] != batch:
            raise RuntimeError(f"{runtime.name}: output batch {out.shape[0]}, expected {batch}")
        values.append(out[:count].reshape(count, -1).astype(np.float32))
        names.extend(batch_names)
        if batch_labels is not None:
            labels.append(batch_labels)
        if progress is not None:
            progress(count)
    log.info("%s: logits for %d images (batch %d)", runtime.name, len(names), batch)
    return Logits(np.concatenate(values), names, np.concatenate(labels) if labels else None)


def cache_key(key_parts: Mapping[str, Any], dataset_fingerprint: str) -> str:
    payload = json.dumps({**key_parts, "dataset": dataset_fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def reference_logits(dataset: Dataset, compute_fn: Callable[[Dataset], Logits], cache_dir: Path | str,
                     key_parts: Mapping[str, Any]) -> tuple[Logits, bool]:
    """Reference logits for ``dataset``, from ``cache_dir`` when cached, else ``compute_fn(dataset)``.

    ``key_parts`` names what produced them, e.g. ``{"model": "LeViT_128S", "weights": "seeded:0",
    "paddle_model_sha256": ...}``; the data set's fingerprint is added. A cache file that cannot be read or
    does not match is recomputed and replaced. Returns (logits, whether they came from the cache).
    """
    fingerprint = dataset.fingerprint
    key = cache_key(key_parts, fingerprint)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key_parts.get("model", "reference")))
    path = Path(cache_dir) / f"{stem}-{key}.npz"
    listed = set(dataset.names())
    if path.is_file():
        try:
            cached, meta = Logits.load(path)
            consistent = len(cached.names) == len(cached.values) and set(cached.names) <= listed
            if meta.get("key") == key and consistent:
                log.info("reference logits from cache %s", path)
                return cached, True
            log.warning("reference cache %s does not match this data set; recomputing", path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("reference cache %s unreadable (%s); recomputing", path, exc)
    logits = compute_fn(dataset)
    if not isinstance(logits, Logits):
        raise TypeError(f"compute_fn must return Logits, got {type(logits).__name__}")
    logits.save(path, {"key": key, "key_parts": dict(key_parts), "dataset_sha256": fingerprint})
    log.info("reference logits cached in %s", path)
    return logits, False


