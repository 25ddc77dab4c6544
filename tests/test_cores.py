"""``core.cores``: the CPUs this process may use and the default thread count, the one place every stage (export,
runtimes, bench) reads them, on Linux and where the OS has no affinity call or sysfs (macOS)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from core import cores

ROOT = Path(__file__).resolve().parents[1]


def fake_sysfs(root: Path, siblings: dict[int, str]) -> Path:
    for cpu, listed in siblings.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text(listed + "\n")
    return root


def test_smt_siblings_count_once(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "SYSFS_CPU", fake_sysfs(tmp_path, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}))
    assert cores.physical_cores([0, 1, 2, 3]) == 2
    assert cores.physical_cores([0, 2]) == 1  # an affinity set of one core's two threads


def test_without_a_topology_the_usable_cpus_count(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "SYSFS_CPU", tmp_path / "absent")
    assert cores.physical_cores([0, 1]) is None
    assert cores.default_threads() == len(cores.usable_cpus())


def test_without_an_affinity_call_every_cpu_is_usable(monkeypatch):
    """macOS has no os.sched_getaffinity: the code that called it unguarded (export's quantizers) failed there."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert cores.usable_cpus() == list(range(os.cpu_count() or 1))
    assert 1 <= cores.default_threads() <= (os.cpu_count() or 1)


def test_here_one_thread_per_physical_core_of_the_affinity_set():
    usable = cores.usable_cpus()
    assert set(usable) <= set(range(os.cpu_count() or 1))
    physical = cores.physical_cores(usable)
    assert cores.default_threads() == (physical or len(usable)) and 1 <= cores.default_threads() <= len(usable)


@pytest.mark.parametrize("call", ["sched_getaffinity", "thread_siblings_list"])
def test_only_core_cores_reads_the_cpus(call):
    """One source of truth: no other module of the four packages asks the OS which CPUs it may use."""
    readers = []
    for package in ("core", "export", "runtimes", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            if any(call in name for name in names):
                readers.append(path.relative_to(ROOT).as_posix())
    assert readers == ["core/cores.py"]


def test_cpu_info_names_cpuid_family_and_model_and_the_report_shows_them():
    """A VM's "AMD EPYC" names no generation: family 25 model 17 is a Zen 4 (Genoa), family 26 a Zen 5."""
    from bench.harness.env import cores_line, cpu_info, cpu_name

    text = ("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n"
            "physical id\t: 0\ncore id\t\t: 0\n\n")
    found = cpu_info(text)
    assert (found["model"], found["family"], found["model_number"]) == ("AMD EPYC", 25, 17)
    assert cpu_name(found) == "AMD EPYC (family 25, model 17)"
    line = cores_line(found)
    assert line.startswith("AMD EPYC (family 25, model 17), ") and line.endswith("/ 1 physical cores")
    assert cpu_name({"model": "Apple M2"}) == "Apple M2"  # no CPUID fields: the name alone
