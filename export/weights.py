"""Model weights: the seeded parity recipe, PaddleClas's official ``.pdparams`` files, and ``.pdparams`` files
from a path or URL.

The seeded recipe is the default that needs no download. Its accuracy is that of a random network, so every
manifest and record names the weights source and no one mistakes it for the trained model.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.cache import cache_root
from core.files import sha256_of
from export.convert import import_paddle

log = logging.getLogger(__name__)

SEEDED = "seeded"
CALIBRATED = "seeded-calibrated"  # see export.calibrated_weights


class WeightsError(ValueError):
    pass


UNPINNED = ("none pinned: trust on first use (the sha256 of the first download is kept beside the cached file and "
            "checked at every later use)")


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights came from: ``seeded`` (the recipe), ``official`` (PaddleClas's file, by URL) or a
    ``.pdparams`` ``file`` (path or URL)."""

    kind: str  # "seeded" | "seeded-calibrated" | "official" | "file"
    location: str  # "seeded-crc32-v1" | absolute path | URL
    sha256: str | None = None
    pinned_sha256: str | None = None  # official: the hash this project pins for the file (None: none known)

    def to_dict(self) -> dict:
        described = {
            "kind": self.kind,
            "location": self.location,
            "sha256": self.sha256,
            "trained": self.kind in ("file", "official"),
        }
        if self.kind == "official":
            described["pinned_sha256"] = self.pinned_sha256
            described["verified"] = self.pinned_sha256 is not None and self.pinned_sha256 == self.sha256
            described["verification"] = "sha256 equals the pinned one" if described["verified"] else UNPINNED
        return described


def seeded_value(name: str, shape: list[int]) -> np.ndarray:
    """One state_dict entry of the parity recipe (``parity/deterministic_weights.md``).

    Seeded by the key name, so the values do not depend on the order of the state_dict, and non-degenerate:
    every head has non-zero weights, so logits differ between images and drift can be measured.
    """
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    if name.endswith("_variance"):
        value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith("_mean") or len(shape) == 1:
        value = rng.normal(0.0, 0.1, shape)
    else:
        value = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape) / shape[0])
    return value.astype(np.float32)


def seeded_state_dict(model) -> dict[str, np.ndarray]:
    """The recipe applied to every float entry of ``model.state_dict()``; integer buffers stay as built."""
    state = {}
    for name, tensor in model.state_dict().items():
        if "float" in str(tensor.dtype):
            state[name] = seeded_value(name, list(tensor.shape))
        else:
            state[name] = tensor.numpy()
    return state


def resolve(
    weights: str | None, default_url: str, cache_dir: Path | None = None, pinned_sha256: str | None = None
) -> tuple[Path | None, WeightsSource]:
    """Turn ``--weights`` into a local file (downloading URLs into the cache) and its recorded source.

    ``None`` or ``"seeded"`` selects the recipe; ``"official"`` the PaddleClas file at ``default_url``, checked
    against ``pinned_sha256`` when one is known (else trusted on first use, which the source says).
    """
    if weights in (None, SEEDED):
        return None, WeightsSource(SEEDED, "seeded-crc32-v1")
    if weights == CALIBRATED:
        raise WeightsError(f"{CALIBRATED} weights are made by export.calibrated_weights, not read from a file")
    if weights == "official":
        path = _download(default_url, cache_dir, pinned_sha256)
        if pinned_sha256 is None:
            log.warning("%s: no pinned sha256; %s", default_url, UNPINNED)
        return path, WeightsSource("official", default_url, sha256_of(path), pinned_sha256)
    if weights.startswith(("http://", "https://")):
        path = _download(weights, cache_dir)
        return path, WeightsSource("file", weights, sha256_of(path))
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass --weights PATH to a .pdparams file")
    return path, WeightsSource("file", str(path), sha256_of(path))


def check_source(weights: str | None) -> None:
    """Refuse, before any work, a ``--weights`` that names a local file that is not there."""
    if weights in (None, SEEDED, CALIBRATED, "official") or weights.startswith(("http://", "https://")):
        return
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass --weights PATH to a .pdparams file, a URL, "
                           f"or {SEEDED}, {CALIBRATED} or official")


def _download(url: str, cache_dir: Path | None, pinned_sha256: str | None = None) -> Path:
    """The cached copy of ``url``, downloaded when missing or when it fails its check (the pinned sha256, else
    the one recorded at its first download)."""
    target = (cache_dir or cache_root()) / "weights" / url.rsplit("/", 1)[-1]
    sha_file = target.with_suffix(target.suffix + ".sha256")
    if target.is_file() and sha_file.is_file():
        expected = pinned_sha256 or sha_file.read_text().strip()
        if sha256_of(target) == expected:
            return target
        log.warning("cached %s failed its integrity check; downloading again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"cannot download {url} ({exc}); download it elsewhere and pass --weights PATH, "
            "or use --weights seeded"
        ) from None
    _check_pdparams(partial)
    got = sha256_of(partial)
    if pinned_sha256 is not None and got != pinned_sha256:
        partial.unlink(missing_ok=True)
        raise WeightsError(f"{url}: downloaded file has sha256 {got}, not the pinned {pinned_sha256}: it is not "
                           "the file this project knows (a changed upload or a bad mirror); nothing was kept")
    os.replace(partial, target)
    sha_file.write_text(got)
    return target


def _check_pdparams(path: Path) -> None:
    if path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        raise WeightsError(f"{path} is empty; the download or the file is broken")


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` file into numpy arrays, with a one-line error for an unreadable file."""
    paddle = import_paddle()

    try:
        state = paddle.load(str(path))
    except Exception as exc:  # paddle raises many types for corrupt pickles
        raise WeightsError(
            f"cannot read weights file {path}: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from None
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"weights file {path} holds no state_dict")
    return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in state.items()}


def check_compatible(model, state: dict[str, np.ndarray], path: Path | str) -> None:
    """Refuse weights whose keys or shapes differ from the model's, naming the first difference."""
    expected = {k: list(t.shape) for k, t in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"weights {path} do not match the model: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); is it the right model?"
        )
    for key, shape in expected.items():
        if list(state[key].shape) != shape:
            raise WeightsError(
                f"weights {path}: {key} has shape {list(state[key].shape)}, the model needs {shape}"
            )


def load_weights(
    model, weights: str | None, default_url: str, cache_dir: Path | None = None, pinned_sha256: str | None = None
) -> WeightsSource:
    """Load weights into ``model`` in place and put it in eval mode; returns where they came from."""
    path, source = resolve(weights, default_url, cache_dir, pinned_sha256)
    if path is None:
        state = seeded_state_dict(model)
    else:
        state = load_state_dict(path)
        check_compatible(model, state, path)
    model.set_state_dict(state)
    model.eval()
    return source
