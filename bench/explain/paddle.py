"""Paddle as the reference of an explain: the export's own Paddle inference model, its intermediate values fetched
from the program and matched to the ONNX tensors by name.

paddle2onnx 2.x names output ``k`` of the ``n``-th op of type ``T`` in the program ``p2o.T.n.k`` (``T`` as
the program spells it, e.g. ``pd_op.conv2d``), counting each op type in program order. The export's graph passes
keep such a name only where the tensor still holds that op's value (``export.optimize.batchnorm`` gives a folded
BatchNorm's name to the Conv that now computes it). So every ``p2o`` name of the export's ONNX graph names a
value of the Paddle program, and the program computes it when it is added to the fetch list.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.explain.capture import Captured, NameMap
from bench.explain.graph import GraphIndex

P2O_NAME = re.compile(r"^p2o\.(?P<op>.+)\.(?P<index>\d+)\.(?P<output>\d+)$")


def paddle_op_of(tensor: str) -> str | None:
    """'p2o.pd_op.conv2d.12.0' -> 'pd_op.conv2d #12'; None for a name paddle2onnx did not derive from an op."""
    match = P2O_NAME.match(tensor)
    return f"{match['op']} #{match['index']}" if match else None


def program_values(program: Any) -> dict[str, Any]:
    """Every op result of a PIR program under the name paddle2onnx gives it. An op returning several tensors
    at once (``pd_op.split``: one vector value, unpacked by a ``builtin.split``) names them ``<value>_<k>``."""
    counter: Counter = Counter()
    values: dict[str, Any] = {}
    for op in program.global_block().ops:
        name = op.name()
        if name == "builtin.split":
            source = op.operand_source(0)
            packed = next((n for n, v in values.items() if v.is_same(source)), None)
            if packed is not None:
                values.update({f"{packed}_{k}": result for k, result in enumerate(op.results())})
        index = counter[name]
        counter[name] += 1
        for k, result in enumerate(op.results()):
            values[f"p2o.{name}.{index}.{k}"] = result
    return values


class PaddleCapture:
    """The Paddle inference model (``paddle/inference.json``) run by Paddle's static executor on the CPU, with
    every ONNX tensor it has a value for fetchable."""

    def __init__(self, model_file: Path, graph: GraphIndex, *, select: Iterable[str] | None = None) -> None:
        import paddle

        paddle.enable_static()  # this process only explains from here on: static mode is what the program needs
        self.label, self.precision, self.model_file = "paddle-fp32", "fp32", Path(model_file)
        self.executor = paddle.static.Executor(paddle.CPUPlace())
        self.program, self.feeds, fetches = paddle.static.load_inference_model(
            str(self.model_file.with_suffix("")), self.executor)
        block = self.program.global_block()
        for op in [op for op in block.ops if op.name() == "pd_op.fetch"]:
            block.remove_op(op)  # the loaded fetch op clashes with a fetch list; the logits are fetched below
        self._logits = fetches[0]
        values = program_values(self.program)
        self._values = {name: values[name] for name in graph.tensors if name in values}
        self.names = NameMap(values={name: name for name in self._values})
        self._select = [n for n in self._values if select is None or n in set(select)]

    def _fetch(self, names: Sequence[str], batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        fetched = self.executor.run(self.program, feed={self.feeds[0]: batch},
                                    fetch_list=[self._values[n] for n in names] + [self._logits])
        return dict(zip(names, fetched[:-1], strict=True)), fetched[-1]

    def run(self, batch: np.ndarray) -> Captured:
        values, logits = self._fetch(self._select, batch)
        return Captured(values, {}, logits)

    def deployed(self, images: np.ndarray) -> np.ndarray:
        return self._fetch([], images)[1]

    def deploy_batch(self) -> int | None:
        return None

    def values(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._fetch(list(names), batch)[0]

    def probeable(self) -> set[str]:
        return set(self._values)

    def probe(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.values(names, batch)  # the program computes what the fetch list needs

    def runtime_layer(self, node: str) -> dict[str, Any] | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"runtime": "paddle static executor, CPU, fp32", "program": str(self.model_file),
                "matched_tensors": len(self._values)}
