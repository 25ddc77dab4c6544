"""``python -m bench run ... --profile``: the top ops by time of the model that just ran, beside its record."""

from __future__ import annotations

import pytest

from bench.cli import cmd_run
from bench.layer_times import profile_table
from bench.records import read_records

FAST = ["--warmup", "1", "--iterations", "3", "--duration", "0.01", "--threads", "1"]


def test_profile_writes_a_table_beside_the_record(onnx_artifact, tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    code = cmd_run(["--runtime", "ort", "--manifest", str(onnx_artifact), *FAST, "--results", str(results),
                    "--profile", "3"])
    assert code == 0, capsys.readouterr().err
    (record,) = read_records(results).valid()
    table = (tmp_path / f"runs-{record.record_id}-profile.md").read_text()
    ops, nodes = table.split("\nTop 3 nodes")
    rows = _rows(ops, "| op ")
    assert 1 <= len(rows) <= 3, table
    assert "Conv" in table and "ort CPU, fp32, batch 1, 1 threads" in table
    shares = [float(row.split("|")[4].strip().rstrip("%")) for row in rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.0 + 1e-6
    node_rows = _rows(nodes, "| node ")
    assert len(node_rows) == 3, table  # the tiny model has more than 3 nodes
    node_shares = [float(row.split("|")[4].strip().rstrip("%")) for row in node_rows]
    assert node_shares == sorted(node_shares, reverse=True) and node_shares[0] <= shares[0] + 1e-6
    assert all("float[1," in row.split("|")[5] for row in node_rows), table  # each output shape, batch 1


def _rows(table: str, header: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(header)]


@pytest.mark.parametrize("runtime", ["ort", "ov"])
def test_profile_table_names_what_ran(onnx_artifact, runtime):
    table = profile_table(runtime, onnx_artifact, batch=2, threads=1, top=20, title="tiny")
    assert table.startswith("# Layer times: tiny") and f"{runtime} CPU, fp32, batch 2" in table
    assert "| op | nodes | ms/run | share | kernel |" in table
    assert ("Convolution" if runtime == "ov" else "Conv") in table
    nodes = _rows(table.split("| node |")[1], "|---")
    assert nodes and all("2," in row.split("|")[5] for row in nodes), table  # output shapes at batch 2
    kernels = {row.split("|")[6].strip() for row in nodes}
    assert (all(kernels) if runtime == "ov" else kernels == {""}), table  # OpenVINO names each node's kernel


def test_profile_on_a_runtime_without_a_profiler_is_a_usage_error(onnx_artifact, tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    code = cmd_run(["--runtime", "null", "--manifest", str(onnx_artifact), *FAST, "--results", str(results),
                    "--profile"])
    assert code == 2 and "--profile TOP needs" in capsys.readouterr().err
    assert not results.exists()
