"""Error figures of a candidate tensor against the reference: accumulated over batches (cosine, relative L2,
max abs), and the growth of an error over the error of what its node reads. Shared by the per-layer comparison
(``compare``) and the deployed-run search (``search``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# An input error below this counts as this, so growth stays finite and fp32 rounding noise (~1e-7) in the
# inputs does not make every later layer look explosive.
ERROR_FLOOR = 1e-6


@dataclass
class Accumulator:
    """Running sums for one tensor over batches, so the images need not all be held at once."""

    ref_sq: float = 0.0
    cand_sq: float = 0.0
    dot: float = 0.0
    diff_sq: float = 0.0
    max_abs: float = 0.0
    ref_absmax: float = 0.0
    image_cos_min: float = math.inf
    nonfinite: int = 0
    shape: tuple[int, ...] = ()
    shape_mismatch: str = ""

    def add(self, ref: np.ndarray, cand: np.ndarray, batch: int) -> None:
        if cand.shape != ref.shape:
            if cand.size != ref.size:
                self.shape_mismatch = f"{tuple(cand.shape)} vs {tuple(ref.shape)}"
                return
            cand = cand.reshape(ref.shape)  # same data, another layout of dims (e.g. squeezed)
        # float32 BLAS dot products: ~1e-6 relative error on the sums, far below any threshold, and 3-4x
        # faster than float64 copies of every tensor.
        r = np.ascontiguousarray(ref, dtype=np.float32).ravel()
        c = np.ascontiguousarray(cand, dtype=np.float32).ravel()
        finite = np.isfinite(c)
        bad = int(c.size - np.count_nonzero(finite))
        if bad:
            self.nonfinite += bad
            c = np.where(finite, c, np.float32(0.0))
        d = c - r
        self.ref_sq += float(np.dot(r, r))
        self.cand_sq += float(np.dot(c, c))
        self.dot += float(np.dot(r, c))
        self.diff_sq += float(np.dot(d, d))
        self.max_abs = max(self.max_abs, float(np.abs(d).max(initial=0.0)))
        self.ref_absmax = max(self.ref_absmax, float(np.abs(r).max(initial=0.0)))
        self.shape = tuple(ref.shape)
        if ref.ndim >= 2 and ref.shape[0] == batch:  # axis 0 is the image: per-image cosine
            rr, cc = r.reshape(batch, -1), c.reshape(batch, -1)
            num = np.einsum("ij,ij->i", rr, cc)
            den = np.sqrt(np.einsum("ij,ij->i", rr, rr) * np.einsum("ij,ij->i", cc, cc))
            cos = np.where(den > 0, num / np.maximum(den, np.float32(1e-30)), 1.0)
            self.image_cos_min = min(self.image_cos_min, float(cos.min()))

    def rel_l2(self) -> float:
        if self.nonfinite:
            return math.inf
        if self.ref_sq == 0.0:
            return 0.0 if self.diff_sq == 0.0 else math.inf
        return math.sqrt(self.diff_sq / self.ref_sq)

    def cosine(self) -> float:
        den = math.sqrt(self.ref_sq * self.cand_sq)
        return 1.0 if den == 0.0 and self.diff_sq == 0.0 else (self.dot / den if den else 0.0)

    def stats(self) -> dict[str, Any]:
        return {"shape": "x".join(map(str, self.shape)), "cosine": self.cosine(),
                "cosine_image_min": self.image_cos_min if math.isfinite(self.image_cos_min) else None,
                "rel_l2": self.rel_l2(), "max_abs": self.max_abs, "ref_absmax": self.ref_absmax,
                "nonfinite": self.nonfinite}


NO_STATS = dict.fromkeys(("shape", "cosine", "cosine_image_min", "rel_l2", "max_abs", "ref_absmax",
                           "nonfinite"))


def relative_error(ref: np.ndarray, cand: np.ndarray, batch: int) -> float:
    acc = Accumulator()
    acc.add(ref, cand, batch)
    return math.inf if acc.shape_mismatch else acc.rel_l2()


def growth(err: float | None, before: float) -> float | None:
    if err is None:
        return None
    return err / max(before, ERROR_FLOOR) if math.isfinite(err) else math.inf
