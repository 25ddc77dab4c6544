"""How far one set of logits drifts from another (a runtime's from Paddle's FP32) on the same tensors.

Statistics (all in :func:`compute_drift`, from per-image :class:`DriftRows` that parts of a set can
merge: :func:`drift_of_rows`):

- Top-1 agreement with the reference, with a Wilson score interval: it keeps within [0, 1] and stays
  informative at 100 % agreement, where the Wald interval collapses to a point.
- Change in top-1 accuracy, candidate minus reference, when labels exist. The two runtimes classify the *same*
  images, so the design is paired: with b = images the reference got right and the candidate wrong and
  c = the reverse, delta = (c - b) / n. Its interval is Newcombe's square-and-add hybrid score interval for
  paired proportions (Newcombe 1998, Stat Med 17:2635, method 10; as in Fagerland, Lydersen & Laake,
  "Statistical Analysis of Contingency Tables", ch. 8). Chosen over the paired Wald interval because Wald
  degenerates to [0, 0] when b = c = 0 (claiming certainty from any n) and can leave [-1, 1]; Newcombe's is
  closed-form, stays inside [-1, 1], and is among the intervals Fagerland et al. (2014) recommend.
- Exact McNemar test: two-sided binomial test of b against Binomial(b + c, 1/2).
- Logit differences: max and mean absolute difference, per-image cosine similarity (min and mean).

A candidate row holding NaN or Inf has no valid prediction: it counts as a flip and as wrong, and is left out
of the logit-difference metrics (``compared_images`` says how many rows those cover). The result says so with
``finite = False``; gates always fail on it. Values are numbers or None (not computable), never NaN.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from core.logits import Logits

log = logging.getLogger(__name__)

CI_METHODS = {
    "agreement": "wilson_score",
    "top1_delta": "newcombe_paired_square_and_add",
    "mcnemar": "exact_binomial_two_sided",
}
_CHUNK = 4096  # rows per step: float64 copies of 50,000 x 1000 logits would need ~800 MB at once

# --- interval estimates and tests -------------------------------------------------------------------------

def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        raise ValueError("Wilson interval needs n > 0")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Pin the end that is exact at the boundary so rounding cannot report 0.9999999999999999 for k = n.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def paired_difference_interval(both: int, only_first: int, only_second: int, neither: int,
                               confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's square-and-add interval for p1 - p2 from a paired 2x2 table.

    ``p1 = (both + only_first) / n`` and ``p2 = (both + only_second) / n``. The correlation estimate phi
    carries Newcombe's n/2 continuity correction when positive and is 0 when a margin is empty.
    """
    n = both + only_first + only_second + neither
    if n <= 0:
        raise ValueError("paired interval needs n > 0")
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson_interval(both + only_first, n, confidence)
    l2, u2 = wilson_interval(both + only_second, n, confidence)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = 0.0
    if margins > 0:
        a = both * neither - only_first * only_second
        if a > n / 2:
            phi = (a - n / 2) / math.sqrt(margins)
        elif a < 0:
            phi = a / math.sqrt(margins)
    d = p1 - p2
    # max(0, ...) guards the square roots against -1e-17 from rounding when phi is near 1.
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    # Log space: exact integer sums of C(m, j) get slow for the tens of thousands of pairs of a full run.
    logs = [math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1) - m * math.log(2)
            for j in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * math.fsum(math.exp(x - top) for x in logs)
    return min(1.0, 2 * tail)


# --- drift ------------------------------------------------------------------------------------------------

@dataclass
class DriftResult:
    """Every number the ``drift`` field of a result record holds. Fractions are in [0, 1]."""

    n: int
    num_classes: int
    finite: bool  # no NaN/Inf in candidate or reference
    nonfinite_values: int  # NaN/Inf entries in the candidate logits
    nonfinite_images: int  # candidate rows holding any; they count as flipped and wrong
    reference_nonfinite_values: int
    agreement: float  # top-1 agreement with the reference
    agreement_ci: list[float]
    flipped: int  # images whose top-1 differs from the reference's
    flipped_indices: list[int]  # first ``max_listed`` of them
    flipped_names: list[str] | None
    flipped_truncated: bool
    compared_images: int  # rows finite in both, which the logit-difference metrics cover
    max_abs_diff: float | None
    mean_abs_diff: float | None
    cosine_min: float | None
    cosine_mean: float | None
    labelled: bool
    reference_top1: float | None
    reference_top5: float | None
    candidate_top1: float | None
    candidate_top5: float | None
    top1_delta: float | None  # candidate - reference
    top1_delta_ci: list[float] | None
    ref_right_cand_wrong: int | None  # b
    ref_wrong_cand_right: int | None  # c
    mcnemar_p: float | None
    confidence: float
    methods: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)


def _topk_hit(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def _check_inputs(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None,
                  names: list[str] | None) -> np.ndarray | None:
    if reference.ndim != 2 or reference.shape != candidate.shape:
        raise ValueError(f"logits must both be [N, C]; got {reference.shape} and {candidate.shape}")
    n, num_classes = reference.shape
    if n == 0:
        raise ValueError("no images to compare")
    if names is not None and len(names) != n:
        raise ValueError(f"{len(names)} names for {n} images")
    if labels is None:
        return None
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return labels


@dataclass(eq=False)
class DriftRows:
    """Per-image figures of a comparison, in image order: predictions and validity of both sides, top-5 hits
    (when labelled), logit differences. Rows of disjoint parts of a set (batches, shards) concatenate into the
    rows of the whole, from which :func:`drift_of_rows` computes every statistic once."""

    num_classes: int
    pred_ref: np.ndarray  # int64; -1: no valid prediction
    pred_cand: np.ndarray
    ok_ref: np.ndarray  # bool: the row is finite
    ok_cand: np.ndarray
    top5_ref: np.ndarray  # bool: the label among the top 5 (False without labels)
    top5_cand: np.ndarray
    row_max: np.ndarray  # float64 max |reference - candidate| (NaN where a side is not finite)
    row_sum: np.ndarray  # float64 sum |reference - candidate| (0 there)
    cosine: np.ndarray  # float64 (NaN there)
    nonfinite_values: int = 0  # NaN/Inf entries in the candidate's rows
    reference_nonfinite: int = 0

    def __len__(self) -> int:
        return len(self.pred_ref)

    @classmethod
    def empty(cls, n: int, num_classes: int) -> DriftRows:
        return cls(num_classes, np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, bool), np.empty(n, bool),
                   np.zeros(n, bool), np.zeros(n, bool), np.full(n, np.nan), np.zeros(n), np.full(n, np.nan))

    @classmethod
    def of(cls, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> DriftRows:
        """The rows of logits [N, C] of the same images, in float64 a chunk at a time."""
        reference, candidate = np.asarray(reference), np.asarray(candidate)
        labels = _check_inputs(reference, candidate, labels, None)
        n, num_classes = reference.shape
        rows = cls.empty(n, num_classes)
        for start in range(0, n, _CHUNK):
            sl = slice(start, start + _CHUNK)
            rows.add(sl, reference[sl].astype(np.float64), candidate[sl].astype(np.float64), labels,
                     min(5, num_classes))
        return rows

    @classmethod
    def concatenate(cls, parts: list[DriftRows]) -> DriftRows:
        if not parts or len({p.num_classes for p in parts}) != 1:
            raise ValueError("rows to concatenate must be at least one part, all of the same class count")
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _ROW_ARRAYS}
        return cls(parts[0].num_classes, **arrays, nonfinite_values=sum(p.nonfinite_values for p in parts),
                   reference_nonfinite=sum(p.reference_nonfinite for p in parts))

    def take(self, index: np.ndarray) -> DriftRows:
        """These rows in another order (``index``: a permutation of the positions)."""
        return DriftRows(self.num_classes, **{name: getattr(self, name)[index] for name in _ROW_ARRAYS},
                         nonfinite_values=self.nonfinite_values, reference_nonfinite=self.reference_nonfinite)

    def add(self, sl: slice, r: np.ndarray, c: np.ndarray, labels: np.ndarray | None, k: int) -> None:
        fin_r, fin_c = np.isfinite(r), np.isfinite(c)
        self.nonfinite_values += int(fin_c.size - fin_c.sum())
        self.reference_nonfinite += int(fin_r.size - fin_r.sum())
        ok_r, ok_c = fin_r.all(axis=1), fin_c.all(axis=1)
        self.ok_ref[sl], self.ok_cand[sl] = ok_r, ok_c
        # -1 marks "no valid prediction": it never equals a label nor a valid prediction.
        self.pred_ref[sl] = np.where(ok_r, np.nan_to_num(r).argmax(axis=1), -1)
        self.pred_cand[sl] = np.where(ok_c, np.nan_to_num(c).argmax(axis=1), -1)
        if labels is not None:
            self.top5_ref[sl] = ok_r & _topk_hit(np.nan_to_num(r), labels[sl], k)
            self.top5_cand[sl] = ok_c & _topk_hit(np.nan_to_num(c), labels[sl], k)
        both = ok_r & ok_c
        if both.any():
            self._differences(np.arange(sl.start, sl.start + r.shape[0])[both], r[both], c[both])

    def _differences(self, idx: np.ndarray, rb: np.ndarray, cb: np.ndarray) -> None:
        diff = np.abs(rb - cb)
        self.row_max[idx] = diff.max(axis=1)
        self.row_sum[idx] = diff.sum(axis=1)
        norms = np.linalg.norm(rb, axis=1) * np.linalg.norm(cb, axis=1)
        dots = np.einsum("ij,ij->i", rb, cb)
        # Two zero vectors are identical (cosine 1); one zero vector against a non-zero one is not (0).
        zero_r, zero_c = ~rb.any(axis=1), ~cb.any(axis=1)
        degenerate = np.where(zero_r & zero_c, 1.0, 0.0)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), degenerate)
        self.cosine[idx] = np.clip(cos, -1.0, 1.0)


_ROW_ARRAYS = ("pred_ref", "pred_cand", "ok_ref", "ok_cand", "top5_ref", "top5_cand", "row_max", "row_sum", "cosine")


def compute_drift(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None,
                  names: list[str] | None = None, *, confidence: float = 0.95,
                  max_listed: int = 100) -> DriftResult:
    """Compare candidate logits [N, C] with reference logits [N, C] of the same images (same order)."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    labels = _check_inputs(reference, candidate, labels, names)
    return drift_of_rows(DriftRows.of(reference, candidate, labels), labels, names, confidence=confidence,
                         max_listed=max_listed)


def drift_of_rows(rows: DriftRows, labels: np.ndarray | None = None, names: list[str] | None = None, *,
                  confidence: float = 0.95, max_listed: int = 100) -> DriftResult:
    """Every statistic of a comparison, from its per-image rows (``labels``: those the rows were made with)."""
    n, num_classes = len(rows), rows.num_classes
    if n == 0:
        raise ValueError("no images to compare")
    agree = (rows.pred_ref == rows.pred_cand) & rows.ok_ref & rows.ok_cand
    flipped = np.flatnonzero(~agree)
    both_ok = rows.ok_ref & rows.ok_cand
    compared = int(both_ok.sum())
    listed = flipped[:max_listed].tolist()
    result = dict(
        n=n, num_classes=num_classes,
        finite=rows.nonfinite_values == 0 and rows.reference_nonfinite == 0,
        nonfinite_values=rows.nonfinite_values, nonfinite_images=int((~rows.ok_cand).sum()),
        reference_nonfinite_values=rows.reference_nonfinite,
        agreement=int(agree.sum()) / n, agreement_ci=list(wilson_interval(int(agree.sum()), n, confidence)),
        flipped=int(flipped.size), flipped_indices=listed,
        flipped_names=[names[i] for i in listed] if names is not None else None,
        flipped_truncated=bool(flipped.size > max_listed),
        compared_images=compared,
        max_abs_diff=float(rows.row_max[both_ok].max()) if compared else None,
        mean_abs_diff=float(rows.row_sum[both_ok].sum() / (compared * num_classes)) if compared else None,
        cosine_min=float(rows.cosine[both_ok].min()) if compared else None,
        cosine_mean=float(rows.cosine[both_ok].mean()) if compared else None,
        labelled=labels is not None, confidence=confidence, methods=dict(CI_METHODS),
        **_accuracy_figures(rows, labels, confidence),
    )
    if not result["finite"]:
        log.warning("non-finite logits: %d values in %d candidate images, %d values in the reference",
                    rows.nonfinite_values, result["nonfinite_images"], rows.reference_nonfinite)
    return DriftResult(**result)


def _accuracy_figures(rows: DriftRows, labels: np.ndarray | None, confidence: float) -> dict:
    """Top-1/top-5 of both sides and the paired change in top-1 (None without labels)."""
    if labels is None:
        return dict(reference_top1=None, reference_top5=None, candidate_top1=None, candidate_top5=None,
                    top1_delta=None, top1_delta_ci=None, ref_right_cand_wrong=None, ref_wrong_cand_right=None,
                    mcnemar_p=None)
    n = labels.shape[0]
    right_ref, right_cand = rows.pred_ref == labels, rows.pred_cand == labels
    both_right = int((right_ref & right_cand).sum())
    b = int((right_ref & ~right_cand).sum())
    c = int((~right_ref & right_cand).sum())
    neither = n - both_right - b - c
    return dict(
        reference_top1=float(right_ref.mean()), reference_top5=float(rows.top5_ref.mean()),
        candidate_top1=float(right_cand.mean()), candidate_top5=float(rows.top5_cand.mean()),
        top1_delta=(c - b) / n,
        # candidate first: the interval is for candidate - reference.
        top1_delta_ci=list(paired_difference_interval(both_right, c, b, neither, confidence)),
        ref_right_cand_wrong=b, ref_wrong_cand_right=c, mcnemar_p=mcnemar_exact_p(b, c),
    )


def compare_logits(reference: Logits, candidate: Logits, **kwargs) -> DriftResult:
    """:func:`compute_drift` on the images both sides hold, matched by name (a side may skip some)."""
    if reference.names == candidate.names:
        ref_vals, cand_vals = reference.values, candidate.values
        names, labels = reference.names, reference.labels
    else:
        position = {name: i for i, name in enumerate(candidate.names)}
        ref_idx = [i for i, name in enumerate(reference.names) if name in position]
        cand_idx = [position[reference.names[i]] for i in ref_idx]
        log.warning("reference has %d images, candidate %d; comparing the %d both hold",
                    len(reference.names), len(candidate.names), len(ref_idx))
        ref_vals, cand_vals = reference.values[ref_idx], candidate.values[cand_idx]
        names = [reference.names[i] for i in ref_idx]
        labels = reference.labels[ref_idx] if reference.labels is not None else None
    return compute_drift(ref_vals, cand_vals, labels, names, **kwargs)
