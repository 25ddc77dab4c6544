"""Which configuration to deploy, per model and place (its host, or its target when the records name one):
the best configuration on the objective among those that meet every budget, the ones tied with it, every
better one with the reason it was rejected, and, when none qualifies, which budget bound. Shared by
``bench recommend``, ``bench tune`` and the report's *Recommendation* section; each configuration is judged by
``bench.report.judge``.

Cells are the report's (``select_cells``: per configuration its latest quiet ok record). Records of
``bench tune``'s screening rungs are kept apart: they make a configuration's cell only when it has no full
measurement, and then it is rejected as screening only.

Ties: a qualifying configuration whose objective figure is within noise of the best one's (the band of
``bench compare``: each run's CV, at least ``min_noise``) is tied with it. Among tied configurations the one
with the smallest drift bound is chosen (then the better figure): speed that cannot be told apart buys
nothing, accuracy does.

Untrained weights: where a model has records of trained weights (``weights.trained: true``), its records of
untrained ones are rejected; where all its records are of untrained weights, the recommendation stands with
a banner that says so (``Recommendation.untrained``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.budgets import Budgets
from bench.records import LoadedRecord
from bench.report.compare import ratio_with_noise
from bench.report.judge import BUDGET_KINDS, Judged, cell_identity, is_screening, judge, trained, where_of
from bench.report.results import Cell, cell_order, select_cells


@dataclass
class Recommendation:
    model: str
    where: str  # host, or target
    budgets: Budgets
    judged: list[Judged]  # every configuration, best first on the objective (those without its figure last)
    choice: Judged | None
    tied: list[Judged]  # qualifying, within noise of the best on the objective, not chosen
    untrained: bool  # the records are of untrained weights: a recommendation only with that banner
    binding: str  # when nothing qualifies: which budget bound, and the closest figures

    @property
    def rejected(self) -> list[Judged]:
        """Every rejected configuration better on the objective than the choice, or whose figure is unknown
        (best first); all of them when nothing qualifies."""
        if self.choice is None:
            return list(self.judged)
        limit = self.choice.rank(self.budgets)
        return [j for j in self.judged if not j.qualifies and (j.rank(self.budgets) < limit
                                                                or j.objective(self.budgets) is None)]


def configurations(records: Sequence[LoadedRecord]) -> list[tuple[Cell, bool]]:
    """Every configuration the records hold, as (cell, screening only)."""
    full = select_cells([r for r in records if not is_screening(r.record.run_id)])
    seen = {cell_identity(c) for c in full}
    screened = [c for c in select_cells([r for r in records if is_screening(r.record.run_id)])
                if cell_identity(c) not in seen]
    return [(c, False) for c in full] + [(c, True) for c in screened]


def recommend(records: Sequence[LoadedRecord], budgets: Budgets, model: str | None = None,
              where: str | None = None, min_noise: float = 0.0) -> list[Recommendation]:
    """A recommendation per (model, place) of the records, for ``model`` and the place ``where`` (a target or
    host name) when given, over the configurations at ``budgets.batch`` when it is set."""
    groups: dict[tuple[str, str], list[tuple[Cell, bool]]] = {}
    for cell, screening in configurations(records):
        place = where_of(cell)
        if model not in (None, cell.model) or budgets.batch not in (None, cell.batch):
            continue
        if where is None or where in (place, cell.host):
            groups.setdefault((cell.model, place), []).append((cell, screening))
    return [_recommend(name, place, members, budgets, min_noise) for (name, place), members in groups.items()]


def _recommend(model: str, where: str, members: list[tuple[Cell, bool]], budgets: Budgets,
               min_noise: float) -> Recommendation:
    flags = {trained(cell) for cell, _ in members}
    judged = [judge(cell, budgets, screening, reject_untrained=True in flags) for cell, screening in members]
    judged.sort(key=lambda j: (j.rank(budgets), cell_order(j.cell)))
    choice, tied = _choose([j for j in judged if j.qualifies], budgets, min_noise)
    untrained = True not in flags and False in flags
    return Recommendation(model, where, budgets, judged, choice, tied, untrained,
                          "" if choice else binding(judged, budgets))


def _choose(qualifying: list[Judged], budgets: Budgets, min_noise: float) -> tuple[Judged | None, list[Judged]]:
    if not qualifying:
        return None, []
    best = qualifying[0]
    group = [best] + [j for j in qualifying[1:] if within_noise(best, j, budgets, min_noise)]
    choice = min(group, key=lambda j: (j.drop_bound, j.rank(budgets)))
    return choice, [j for j in group if j is not choice]


def within_noise(a: Judged, b: Judged, budgets: Budgets, min_noise: float = 0.0) -> bool:
    """Whether the objective figures of ``a`` and ``b`` cannot be told apart (``bench compare``'s band)."""
    va, vb = a.objective(budgets), b.objective(budgets)
    if va is None or vb is None or va <= 0 or vb <= 0:
        return False
    ratio = ratio_with_noise(va, a.cell.latency("cv"), vb, b.cell.latency("cv"), min_noise)
    return va == vb or bool(ratio.within_noise)


def binding(judged: Sequence[Judged], budgets: Budgets) -> str:
    """Why nothing qualifies: the budget(s) that alone reject a usable configuration, and the closest figures."""
    usable = [j for j in judged if j.rejections and all(r.kind in BUDGET_KINDS for r in j.rejections)]
    if not usable:
        counts = Counter(j.rejections[0].kind for j in judged if j.rejections)
        hint = ("; measure again on a quiet machine (README: Quiet measurements)"
                if "load-flagged timing" in counts else "")
        return ("no configuration has a usable measurement ("
                + ", ".join(f"{n} {k}" for k, n in counts.items()) + ")" + hint)
    alone = Counter(BUDGET_KINDS[j.rejections[0].kind] for j in usable if len(j.rejections) == 1)
    if alone:
        head = "; ".join(f"the {name} budget alone rejects {n} configuration(s)" for name, n in alone.items())
    else:
        head = "every usable configuration fails more than one budget"
    failing = {BUDGET_KINDS[r.kind] for j in usable for r in j.rejections}
    return f"{head}; closest: {'; '.join(_closest(usable, budgets, failing))}"


def _closest(usable: Sequence[Judged], budgets: Budgets, failing: set[str]) -> list[str]:
    """The best figure the configurations reached on each budget that rejects one, and against what."""
    parts = []
    timed = [j for j in usable if j.latency is not None]
    if "latency" in failing and timed:
        best = min(timed, key=lambda j: j.latency)
        parts.append(f"{budgets.percentile} {best.latency:.3g} ms ({best.label}) against {budgets.max_latency_ms:g} ms")
    counted = [j for j in usable if j.throughput is not None]
    if "throughput" in failing and counted:
        best = max(counted, key=lambda j: j.throughput)
        parts.append(f"{best.throughput:.4g} images/s ({best.label}) against {budgets.min_throughput:g}")
    bounded = [j for j in usable if j.drop is not None]
    if "drift" in failing and bounded:
        best = min(bounded, key=lambda j: j.drop.upper)
        text = f"drop up to {best.drop.upper:.2f} points ({best.label}) against {budgets.max_drop:g}"
        floor = best.drop.floor
        if floor is not None and budgets.max_drop < floor:
            text += (f" ({best.drop.n} images cannot bound a drop below {floor:.2f} points even with no image "
                     "flipped: measure drift on more images, --data DIR)")
        parts.append(text)
    return parts
