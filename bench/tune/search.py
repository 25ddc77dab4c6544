"""The pruning rule of ``bench tune``'s screening rungs: which candidates go on to a longer measurement.

After each rung, a candidate is dropped when

1. its measurement failed (an error record: it does not run here as asked);
2. it is over a timing budget beyond its noise: its figure is past the budget even after taking off its own
   noise (a factor ``1 + max(CV, min_noise)``);
3. it is dominated beyond noise: another candidate, at least as accurate a priori (``space.accuracy_class``:
   fp32 on any runtime or graph level, or the same reduced-precision class) and itself inside the timing
   budgets, is better on the objective with ``bench compare``'s noise band of the two runs excluding 1;
4. halving: of the ``n`` left, at most ``max(finalists, ceil(n / eta))`` go on: the best fp32 one, the best of
   each other accuracy class (its accuracy is still unknown, so no other class may stand in for it), then the
   rest by objective.

A candidate measured under contention gets no verdict: it goes on, to be measured again. So a candidate is
only ever dropped for a figure measured quietly, and the fastest fp32 candidate inside the budgets always
survives (nothing may drop it but a faster fp32 one): whatever the drift budget rejects in the final, fp32 is
there to fall back on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.budgets import Budgets
from bench.report.compare import ratio_with_noise
from bench.report.judge import config_label
from bench.report.results import Cell
from bench.request import BenchRequest
from bench.tune.space import accuracy_class, at_least_as_accurate


@dataclass
class Entry:
    """A candidate and the cell of its measurement at one rung (None: not measured there)."""

    request: BenchRequest
    cell: Cell | None

    def figure(self, budgets: Budgets) -> float | None:
        if self.cell is None or not self.cell.ok:
            return None
        return (self.cell.latency(budgets.percentile) if budgets.objective == "latency"
                else self.cell.timing_number("throughput_ips"))

    @property
    def cv(self) -> float | None:
        return self.cell.latency("cv") if self.cell is not None else None

    @property
    def contended(self) -> bool:
        return bool(self.cell is not None and self.cell.contention)

    @property
    def label(self) -> str:
        if self.cell is not None:
            return config_label(self.cell)
        r = self.request
        return f"{r.runtime_name} {r.runtime.precision} b{r.batch} threads {r.runtime.threads}"

    def rank(self, budgets: Budgets) -> float:
        value = self.figure(budgets)
        if value is None:
            return math.inf
        return value if budgets.objective == "latency" else -value


@dataclass(frozen=True)
class Verdict:
    survivors: list[Entry]
    dropped: list[tuple[Entry, str]]  # (candidate, why)


def over_budget(e: Entry, budgets: Budgets, min_noise: float, margin: bool = True) -> str | None:
    """Why ``e`` is past a timing budget (beyond its noise when ``margin``), else None."""
    if e.cell is None or not e.cell.ok:
        return None
    noise = 1 + max(e.cv or 0.0, min_noise) if margin else 1.0
    latency, throughput = e.cell.latency(budgets.percentile), e.cell.timing_number("throughput_ips")
    if budgets.max_latency_ms is not None and latency is not None and latency / noise > budgets.max_latency_ms:
        return f"{budgets.percentile} {latency:.3g} ms over the {budgets.max_latency_ms:g} ms budget beyond its noise"
    if budgets.min_throughput is not None and throughput is not None and throughput * noise < budgets.min_throughput:
        return f"{throughput:.4g} images/s under the {budgets.min_throughput:g} budget beyond its noise"
    return None


def dominated(e: Entry, entries: Sequence[Entry], budgets: Budgets, min_noise: float) -> str | None:
    """Why ``e`` is dominated beyond noise (rule 3), naming the best candidate that dominates it."""
    value = e.figure(budgets)
    if value is None or value <= 0 or e.contended:
        return None
    mine = accuracy_class(e.request)
    for other in sorted(entries, key=lambda x: x.rank(budgets)):
        theirs = other.figure(budgets)
        if (other is e or theirs is None or theirs <= 0 or other.contended
                or not at_least_as_accurate(accuracy_class(other.request), mine)
                or over_budget(other, budgets, min_noise, margin=False)):
            continue
        ratio = ratio_with_noise(theirs, other.cv, value, e.cv, min_noise)
        worse = ratio.ratio > 1 if budgets.objective == "latency" else ratio.ratio < 1
        if worse and ratio.within_noise is False:
            return (f"dominated by {other.label}: {_figure(value, budgets)} against {_figure(theirs, budgets)}, "
                    f"ratio {ratio.ratio:.3f} outside its noise band [{ratio.lo:.3f}, {ratio.hi:.3f}]")
    return None


def _figure(value: float, budgets: Budgets) -> str:
    return f"{budgets.percentile} {value:.3g} ms" if budgets.objective == "latency" else f"{value:.4g} images/s"


def prune(entries: Sequence[Entry], budgets: Budgets, min_noise: float, finalists: int, eta: int) -> Verdict:
    """Rules 1-4 of the module docstring over one rung's measurements."""
    standing, dropped = [], []
    for e in entries:
        if e.cell is None:
            why = "not measured"
        elif not e.cell.ok:
            why = f"{e.cell.status}: {e.cell.message}"
        else:
            why = over_budget(e, budgets, min_noise) or dominated(e, entries, budgets, min_noise)
        if why:
            dropped.append((e, why))
        else:
            standing.append(e)
    keep = max(finalists, math.ceil(len(standing) / eta))
    kept = halve(standing, budgets, keep)
    ids = {id(e) for e in kept}
    dropped += [(e, f"halved: not among the {keep} kept (the best of each accuracy class, then by objective)")
                for e in standing if id(e) not in ids]
    return Verdict(kept, dropped)


def halve(entries: Sequence[Entry], budgets: Budgets, keep: int, contended_go_on: bool = True) -> list[Entry]:
    """``keep`` of the quietly measured ``entries`` (the best fp32 one, the best of each other accuracy class,
    then the rest, in order of the objective), in order of the objective; and every contended one besides (no
    verdict), or with ``contended_go_on`` False (the finalists, a hard limit) only to fill what is left."""
    ordered = sorted(entries, key=lambda e: e.rank(budgets))
    quiet = [e for e in ordered if not e.contended]
    bests: dict[tuple, Entry] = {}
    for e in quiet:
        bests.setdefault(accuracy_class(e.request), e)
    first = sorted(bests.values(), key=lambda e: (accuracy_class(e.request) != ("fp32",), e.rank(budgets)))
    loaded = [e for e in ordered if e.contended]
    picked: list[Entry] = []
    for e in first + quiet + ([] if contended_go_on else loaded):
        if len(picked) >= max(keep, 1):
            break
        if all(e is not p for p in picked):
            picked.append(e)
    chosen = {id(e) for e in picked} | ({id(e) for e in loaded} if contended_go_on else set())
    return [e for e in ordered if id(e) in chosen]
