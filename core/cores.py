"""The CPUs this process may run on, and the default thread count of every stage (the export's quantizers and
checks, the runtimes, the benchmark): one function each, so that they cannot drift apart.

Linux: the affinity set (``taskset``, cgroup cpusets) and, from sysfs, which of those CPUs are SMT siblings of
one physical core. Elsewhere (macOS has no ``os.sched_getaffinity`` and no sysfs): every logical CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

SYSFS_CPU = Path("/sys/devices/system/cpu")


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on: its affinity set where the OS has one, else all of them."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | None = None) -> int | None:
    """How many physical cores ``cpus`` (default: :func:`usable_cpus`) span, SMT siblings counted once; None
    where the topology cannot be read (no sysfs)."""
    cores = set()
    for cpu in usable_cpus() if cpus is None else cpus:
        try:
            cores.add((SYSFS_CPU / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip())
        except OSError:
            return None
    return len(cores) or None


def default_threads() -> int:
    """One thread per physical core this process may use; one per usable CPU where the topology is unknown."""
    cpus = usable_cpus()
    return max(1, physical_cores(cpus) or len(cpus))
