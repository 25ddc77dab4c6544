"""Where a task may run: the Ray options that place it on a node of a target, and the one way to start a
function there (``run_on_target``), for sweep cells now and for other per-node work (shards) later.

A cell asks for its target's resources and labels plus the node's single ``bench_slot``, so a node never times
two cells at once; ``num_cpus`` is 0 unless the target names CPUs, because the slot, not Ray's CPU count, is what
keeps a node to one measurement. Ray's own retries are off: the driver decides about a failed attempt, since
only it knows which node to avoid and whether another node of the target is left (``bench.cluster.dispatch``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from bench.targets import ANY_NODE, SLOT, TargetSpec

NODE_ID_LABEL = "ray.io/node-id"  # the label Ray gives every node


def task_options(target: TargetSpec, slot: bool = True, avoid: Sequence[str] = ()) -> dict[str, Any]:
    """Ray task options for a node that offers ``target`` (and a free ``bench_slot`` when ``slot``), not one of
    the nodes in ``avoid``. Ray counts CPUs and GPUs apart from custom resources: a target naming them asks for
    them as ``num_cpus``/``num_gpus`` (a GPU target gets its GPU that way)."""
    resources = dict(target.resources)
    options: dict[str, Any] = {"num_cpus": resources.pop("CPU", 0), "num_gpus": resources.pop("GPU", 0),
                               "max_retries": 0, "retry_exceptions": False}
    if slot:
        resources[SLOT] = 1
    options["resources"] = resources
    labels = dict(target.labels)
    if avoid:
        labels[NODE_ID_LABEL] = f"!{avoid[0]}" if len(avoid) == 1 else f"!in({','.join(avoid)})"
    if labels:
        options["label_selector"] = labels
    return options


@functools.cache
def _remote(fn: Callable):
    """One Ray remote function per Python function (Ray ships a function's code once per remote function)."""
    import ray

    return ray.remote(fn)


def run_on_target(fn: Callable, *args: Any, target: TargetSpec = ANY_NODE, slot: bool = True,
                  avoid: Sequence[str] = ()):
    """Start ``fn(*args)`` as a Ray task on a node of ``target`` (holding its ``bench_slot`` when ``slot``); the
    task's ObjectRef. ``fn`` must be importable on the nodes (a module-level function of this checkout)."""
    return _remote(fn).options(**task_options(target, slot, avoid)).remote(*args)
