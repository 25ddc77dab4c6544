"""Hardware targets of a sweep across hosts: bench.yaml's ``targets:`` (a name -> the Ray resources and node
labels a node offers when it is that kind of machine) and the rule that says whether a node offers one.

Plain data and checks, no Ray: bench.yaml is read here on every sweep, clustered or not. The Ray side
(``bench.cluster``) turns a target into task options and matches it against the live nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.yamlio import ConfigReader

SLOT = "bench_slot"  # the resource a node offers once (`ray start --resources '{"bench_slot": 1}'`): one cell at a time


@dataclass(frozen=True)
class TargetSpec:
    """A kind of node: the resources it offers (each amount at least this) and its labels (each matching).

    A label value is matched as Ray's label selectors read it: ``v`` equals, ``!v`` differs, ``in(a,b)`` is one
    of, ``!in(a,b)`` is none of."""

    name: str
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def offered_by(self, resources: dict[str, float], labels: dict[str, str]) -> bool:
        """Whether a node with these (total) resources and labels can run this target's cells."""
        if resources.get(SLOT, 0) < 1:
            return False
        if any(resources.get(k, 0) < v for k, v in self.resources.items()):
            return False
        return all(label_matches(labels.get(k), v) for k, v in self.labels.items())

    def describe(self) -> str:
        parts = [f"resources {self.resources}"] if self.resources else []
        parts += [f"labels {self.labels}"] if self.labels else []
        return " and ".join(parts) or "any node"


ANY_NODE = TargetSpec("any node")  # the cells of a sweep without sweep.targets: any node with a bench_slot


def label_matches(value: str | None, selector: str) -> bool:
    negate = selector.startswith("!")
    wanted = selector[1:] if negate else selector
    if wanted.startswith("in(") and wanted.endswith(")"):
        hit = value in {v.strip() for v in wanted[3:-1].split(",")}
    else:
        hit = value == wanted
    return hit != negate


def parse_targets(reader: ConfigReader, data: Any) -> dict[str, TargetSpec]:
    """bench.yaml ``targets:``: ``name: {resources: {NAME: AMOUNT}, labels: {KEY: VALUE}}``."""
    targets = {}
    for name, spec in reader.mapping(data, "targets", None).items():
        key = f"targets.{name}"
        spec = reader.mapping(spec, key, ("resources", "labels"))
        if not spec:
            raise reader.fail(key, "name the resources or labels a node of this target offers, e.g. "
                                   f"{{resources: {{{name}: 1}}}}")
        resources = {str(k): reader.number(v, f"{key}.resources.{k}", positive=True)
                     for k, v in reader.mapping(spec.get("resources", {}), f"{key}.resources", None).items()}
        if SLOT in resources:
            raise reader.fail(f"{key}.resources.{SLOT}", f"every cell takes its node's {SLOT}; name the "
                                                         "resources that tell this kind of node apart")
        labels = {str(k): reader.string(v, f"{key}.labels.{k}")
                  for k, v in reader.mapping(spec.get("labels", {}), f"{key}.labels", None).items()}
        targets[name] = TargetSpec(name, resources, labels)
    return targets


def parse_sweep_targets(reader: ConfigReader, data: Any, known: dict[str, TargetSpec]) -> tuple[str, ...]:
    """``sweep.targets``: names from ``targets:`` (each a cell of the matrix); empty: any node."""
    names = reader.sequence(data, "sweep.targets", allow_empty=True)
    for i, name in enumerate(names):
        if name not in known:
            allowed = ", ".join(known) or "none: define them under targets:"
            raise reader.fail(f"sweep.targets[{i}]", f"unknown target {name!r}; defined: {allowed}")
    return tuple(dict.fromkeys(names))
