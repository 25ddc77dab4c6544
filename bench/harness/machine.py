"""Load awareness: how busy the machine was before, during and after a cell was measured.

A latency figure is only as good as the quiet it was taken in: three identical runs in parallel on two
cores were ~10x slower, and nothing said so. Like pyperf's ``system`` checks and Google Benchmark's
CPU-scaling warning, every cell records:

- the load average and the busy processes (other than the cell) just before and just after the timed part,
- the CPU time other processes used on the cores this process may run on *while it was measured*, from the
  kernel's per-CPU counters (``/proc/stat``, steal time of a VM included) minus this process's own time,
- the CPU frequency governor and clock, the CPU pressure (``/proc/pressure/cpu``) where the kernel has it.

A cell is flagged ``contended`` when other processes used at least ``OTHERS_LIMIT_CORES`` of a core on
average while it was measured (or, for a timed part too short to judge, both just before and just after
it). ``bench compare`` and the report give no faster/slower verdict on a flagged cell and say why.

Everything here reads ``/proc`` and ``/sys``; where they are missing (not Linux) a figure is None, never an
error: load awareness must not fail a benchmark.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cores import usable_cpus

OTHERS_LIMIT_CORES = 0.25  # other processes' mean CPU use (in cores) that makes a measurement contended
MIN_WINDOW_S = 0.25  # shortest before/after sample: the kernel counts CPU time in 10 ms ticks
RELIABLE_WINDOW_S = 0.5  # a timed part shorter than this is judged from the samples around it
BUSY_PROCESS_PCT = 5.0  # a process using this much of a core is listed as busy
TOP_PROCESSES = 5
_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


@dataclass
class Snapshot:
    """Cumulative counters at one moment; two of them make a window."""

    at: float  # time.monotonic()
    busy_s: float | None  # CPU time spent busy (steal included) on the CPUs this process may use
    steal_s: float | None
    own_s: float  # this process's CPU time, all threads
    pressure_us: int | None  # /proc/pressure/cpu "some" total
    cpu_count: int  # how many CPUs busy_s covers
    processes: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # pid -> (name, ticks, start)


def _cpu_counters(cpus: list[int]) -> tuple[float | None, float | None]:
    """(busy seconds, steal seconds) summed over ``cpus``, from /proc/stat."""
    wanted = {f"cpu{n}" for n in cpus}
    busy = steal = 0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split()
        if not parts or parts[0] not in wanted:
            continue
        values = [int(v) for v in parts[1:9]] + [0] * (8 - len(parts[1:9]))
        user, nice, system, _idle, _iowait, irq, softirq, stolen = values
        busy += user + nice + system + irq + softirq + stolen  # guest time is already inside user
        steal += stolen
    return busy * _TICK_S, steal * _TICK_S


def _pressure_us() -> int | None:
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _processes() -> dict[int, tuple[str, int, int]]:
    """pid -> (command name, user + system ticks, start time) for every process but this one."""
    found = {}
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        try:
            found[int(entry)] = (name, int(fields[11]) + int(fields[12]), int(fields[19]))  # utime, stime, start
        except (IndexError, ValueError):
            continue
    return found


def snapshot(cpus: list[int] | None = None) -> Snapshot:
    cpus = cpus if cpus is not None else usable_cpus()
    busy, steal = _cpu_counters(cpus)
    times = os.times()
    return Snapshot(time.monotonic(), busy, steal, times.user + times.system, _pressure_us(), len(cpus),
                    _processes())


def window(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """What other processes did between two snapshots."""
    seconds = max(b.at - a.at, 1e-9)
    others = steal = pressure = None
    readable = seconds >= MIN_WINDOW_S / 2  # else a few 10 ms ticks: any share read from them is noise
    if readable and a.busy_s is not None and b.busy_s is not None:
        # Counters tick every 10 ms: a short window can read above the CPU count; clamp it.
        others = round(min(b.cpu_count, max(0.0, (b.busy_s - a.busy_s) - (b.own_s - a.own_s)) / seconds), 3)
        steal = round(max(0.0, b.steal_s - a.steal_s) / seconds, 3)
    if readable and a.pressure_us is not None and b.pressure_us is not None:
        pressure = round(min(100.0, 100 * (b.pressure_us - a.pressure_us) / 1e6 / seconds), 1)
    busy = []
    for pid, (name, ticks, start) in b.processes.items() if readable else ():
        before = a.processes.get(pid)
        used = ticks - (before[1] if before and before[2] == start else 0)  # else: started within the window
        percent = 100 * used * _TICK_S / seconds
        if percent >= BUSY_PROCESS_PCT:
            busy.append({"pid": pid, "name": name, "cpu_pct": round(percent, 1)})
    busy.sort(key=lambda p: -p["cpu_pct"])
    return {"window_s": round(seconds, 3), "others_cores": others, "steal_cores": steal,
            "cpu_pressure_pct": pressure, "busy": busy[:TOP_PROCESSES]}


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def frequency(cpus: list[int]) -> dict[str, Any]:
    """The governor(s) and current clock of ``cpus`` (None where cpufreq is not exposed, as in most VMs)."""
    governors, khz = set(), []
    for n in cpus:
        folder = Path(f"/sys/devices/system/cpu/cpu{n}/cpufreq")
        governor = _read(folder / "scaling_governor")
        if governor:
            governors.add(governor)
        current = _read(folder / "scaling_cur_freq")
        if current and current.isdigit():
            khz.append(int(current))
    mhz = [round(min(khz) / 1000), round(max(khz) / 1000)] if khz else None
    return {"governor": ", ".join(sorted(governors)) or None, "cpu_mhz_min_max": mhz}


def judge(before: dict, during: dict, after: dict, limit: float = OTHERS_LIMIT_CORES) -> list[str]:
    """Why the measurement counts as contended (empty: it does not)."""
    def used(w: dict) -> float | None:
        return w.get("others_cores")

    def who(w: dict) -> str:
        names = ", ".join(f"{p['name']} (pid {p['pid']}) {p['cpu_pct']:.0f} %" for p in w.get("busy") or [])
        steal = w.get("steal_cores") or 0
        if steal >= limit:
            names = ", ".join(filter(None, [names, f"the hypervisor (steal) {100 * steal:.0f} %"]))
        return f": {names}" if names else ""

    if during.get("window_s", 0) >= RELIABLE_WINDOW_S and used(during) is not None:
        if used(during) >= limit:
            return [f"other processes used {used(during):.2f} cores on average while the cell was measured "
                    f"(limit {limit:g}){who(during)}"]
        return []
    if all(used(w) is not None and used(w) >= limit for w in (before, after)):
        return [f"other processes used {used(before):.2f} cores just before and {used(after):.2f} just after "
                f"the cell was measured (limit {limit:g}; the timed part was too short to judge on its "
                f"own){who(before) or who(after)}"]
    return []


class MachineWatch:
    """``watch = MachineWatch()`` when a cell starts, ``begin()`` / ``end()`` around the measurement,
    ``section()`` when the cell is done: the record's ``machine`` section.

    The before window is at least ``MIN_WINDOW_S`` long; the after window too, but only when the timed part was
    too short to be judged on its own (otherwise the after window is what passed until ``section()``, and a
    window too short to read says None)."""

    def __init__(self) -> None:
        self.cpus = usable_cpus()
        self._marks: list[Snapshot] = [snapshot(self.cpus)]
        self._load: list[list[float] | None] = []

    def _mark(self) -> None:
        wait = MIN_WINDOW_S - (time.monotonic() - self._marks[-1].at)
        timed_part = len(self._marks) == 2  # as long as it is
        judged_alone = len(self._marks) == 3 and self._marks[2].at - self._marks[1].at >= RELIABLE_WINDOW_S
        if wait > 0 and not timed_part and not judged_alone:
            time.sleep(wait)
        self._marks.append(snapshot(self.cpus))

    def begin(self) -> None:
        self._mark()
        self._load.append(loadavg())

    def end(self) -> None:
        if len(self._marks) == 2:
            self._mark()

    def section(self) -> dict[str, Any] | None:
        """None when the measurement never began."""
        if len(self._marks) < 2:
            return None
        self.end()
        self._mark()
        self._load.append(loadavg())
        marks = self._marks
        before, during, after = (window(a, b) for a, b in zip(marks, marks[1:4], strict=False))
        before["loadavg"], after["loadavg"] = self._load[0], self._load[-1]
        reasons = judge(before, during, after)
        warnings = []
        freq = frequency(self.cpus)
        if freq["governor"] not in (None, "performance"):
            warnings.append(f"CPU frequency governor is {freq['governor']!r}, not 'performance': clocks vary "
                            "with load, so latency does too")
        return {"usable_cpus": len(self.cpus), **freq, "before": before, "during": during, "after": after,
                "contended": bool(reasons), "contention": reasons, "warnings": warnings,
                "others_limit_cores": OTHERS_LIMIT_CORES}


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
