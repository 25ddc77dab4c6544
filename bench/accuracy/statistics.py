"""Top-1 and top-5 accuracy of merged per-image results, with their 95 % intervals, beside PaddleClas's
published figures; and against Paddle's reference, the drift figures (agreement, flipped images, the paired change
in top-1 with McNemar's test, logit differences). Computed once, on the whole set
(``bench.accuracy.per_image.merge`` joins shards first)."""

from __future__ import annotations

from bench.accuracy.per_image import ImageResults
from core.metrics import drift_of_rows, wilson_interval


def accuracy_statistics(results: ImageResults, published: dict[str, float] | None = None,
                        confidence: float = 0.95) -> dict:
    """``{"n", "top1", "top1_ci", "top5", "top5_ci", "published_top1", "top1_minus_published", ...}``.

    ``published``: PaddleClas's ``{"top1", "top5"}`` for the model (None: none known). An image whose logits
    are not finite counts as wrong; an unreadable image is not counted (the record names it).
    """
    n = len(results)
    if n == 0:
        raise ValueError("no image was measured")
    right1 = results.top[:, 0] == results.labels
    right5 = (results.top == results.labels[:, None]).any(axis=1)
    hits1, hits5 = int(right1.sum()), int(right5.sum())
    figures = {
        "n": n,
        "top1": hits1 / n, "top1_ci": list(wilson_interval(hits1, n, confidence)),
        "top5": hits5 / n, "top5_ci": list(wilson_interval(hits5, n, confidence)),
        "confidence": confidence, "interval": "wilson_score",
        "nonfinite_images": int((~results.finite).sum()),
        "unreadable_images": len(results.unreadable),
        "unreadable": list(results.unreadable),
        "enlarged_images": len(results.enlarged),
    }
    for k in ("top1", "top5"):
        value = (published or {}).get(k)
        figures[f"published_{k}"] = value
        figures[f"{k}_minus_published"] = None if value is None else figures[k] - value
        lo, hi = figures[f"{k}_ci"]
        figures[f"published_{k}_in_ci"] = None if value is None else bool(lo <= value <= hi)
    return figures


def drift_statistics(results: ImageResults, reference_source: str, confidence: float = 0.95) -> dict:
    """The drift figures of merged per-image results (``core.metrics.DriftResult``'s fields), as a drift pass
    records them; the flipped images are named."""
    if results.drift is None:
        raise ValueError("no reference ran: there is no drift to compute")
    figures = drift_of_rows(results.drift, results.labels, results.names, confidence=confidence).to_dict()
    return {**figures, "reference_source": reference_source}
