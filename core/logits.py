"""The one logits file format: ``.npz`` with ``values`` [N, C], ``names`` [N], optional ``labels`` [N] and a
JSON ``meta`` string. The export stage stores Paddle's reference logits in it, and the benchmark stage's
reference cache uses it too."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.files import write_atomic


@dataclass
class Logits:
    """Logits of a data set's images in iteration order, with their names and labels."""

    values: np.ndarray  # [N, C]
    names: list[str]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values):
            raise ValueError(f"{len(self.names)} names for {len(self.values)} rows of logits")

    def save(self, path: Path, meta: Mapping[str, Any] | None = None) -> None:
        """Write the file atomically: a reader sees the old file or the whole new one, never half."""
        arrays = {"values": np.asarray(self.values, np.float32), "names": np.array(self.names, dtype=str),
                  "meta": np.array(json.dumps(dict(meta or {}), sort_keys=True))}
        if self.labels is not None:
            arrays["labels"] = np.asarray(self.labels, np.int64)
        write_atomic(path, lambda f: np.savez_compressed(f, **arrays))

    @classmethod
    def load(cls, path: Path) -> tuple[Logits, dict]:
        """(logits, meta); ``ValueError`` naming the file when it is not a logits file."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                labels = z["labels"] if "labels" in z.files else None
                return cls(z["values"], z["names"].tolist(), labels), json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a logits file ({type(exc).__name__}: {exc})") from None
