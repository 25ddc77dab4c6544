"""PaddleRuntime: Paddle Inference on the artifact's original Paddle model, the baseline for the others.

CPU only, fp32 only, oneDNN (MKLDNN) on, IR optimisation on, ``threads`` (default: physical cores) math
threads. It reads the PIR ``.json`` + ``.pdiparams`` the export stage started from, not the ONNX file.

Throughput scenario: ``requests`` predictor clones (sharing the weights), one per worker thread, the math
threads split among them (default: one clone per core, one thread each).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import ClassVar

import numpy as np

from core.artifact import Artifact
from core.cores import default_threads
from core.proc import signals_held_for_import
from runtimes.base import Availability, Requests, Runtime, RuntimeUnavailable
from runtimes.concurrent import ThreadedRequests, plan_requests, threads_per_request, throughput_effective
from runtimes.deps import MissingDependency, is_installed, require
from runtimes.host import feed_batch, parse_device


class PaddleRuntime(Runtime):
    """Paddle Inference predictor; inputs are copied into the predictor once, in ``prepare``."""

    name: ClassVar[str] = "paddle"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    runs_paddle_model: ClassVar[bool] = True  # the baseline: the Paddle model the export started from

    def __init__(self, options) -> None:
        super().__init__(options)
        parse_device(self.name, options.device, self.devices)

    @classmethod
    def probe(cls, device: str | None = None) -> Availability:
        if not is_installed("paddle"):
            return Availability(cls.name, False, str(MissingDependency("paddle", "export")))
        try:
            if device is not None:
                parse_device(cls.name, device, cls.devices)
            paddle, _ = _import_paddle()
        except Exception as exc:
            return Availability(cls.name, False, str(exc))
        return Availability(cls.name, True, detail=f"paddlepaddle {paddle.__version__}, CPU (oneDNN)")

    def _load(self, artifact: Artifact) -> None:
        files = artifact.paddle_files
        if files is None or not all(f.is_file() for f in files):
            raise RuntimeUnavailable(f"{artifact.model}: no Paddle inference model beside the export")
        model_file, params_file = files
        _, inference = _import_paddle()
        threads = self.options.threads or default_threads()
        plan = self._plan_throughput(threads) if self.throughput else {}
        threads = plan.get("threads_per_request", threads)
        config = inference.Config(str(model_file), str(params_file))
        config.disable_gpu()
        config.switch_ir_optim(True)
        # Paddle 3 renamed MKLDNN to oneDNN; the old names remain as aliases.
        (getattr(config, "enable_onednn", None) or config.enable_mkldnn)()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()  # else ~40 coloured "Running PIR pass" lines per load, on stderr
        self._predictor = inference.create_predictor(config)
        self._input_name = artifact.input_name
        self._output_name = artifact.output_name
        onednn = (getattr(config, "onednn_enabled", None) or config.mkldnn_enabled)()
        self.effective = {
            "device": "cpu",
            "precision": "fp32",
            "onednn": bool(onednn),
            "ir_optim": bool(config.ir_optim()),
            "threads": int(config.cpu_math_library_num_threads()),
            "model_format": model_file.suffix.lstrip("."),
            **plan,
        }
        if not onednn:
            self.notes.append("oneDNN did not enable (Paddle built without it?): plain CPU kernels ran")
        names = self._predictor.get_input_names()
        if len(names) != 1:
            raise ValueError(f"{artifact.model}: expected one Paddle input, found {names}")
        self._input = self._predictor.get_input_handle(names[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        array, _ = feed_batch(feeds, self._input_name)
        self._array = array  # the throughput scenario's clones copy it in too
        self._input.reshape(list(array.shape))
        self._input.copy_from_cpu(array)

    def _run(self) -> None:
        self._predictor.run()  # synchronous on CPU

    def _outputs(self) -> dict[str, np.ndarray]:
        return {self._output_name: self._output.copy_to_cpu()}

    def _close(self) -> None:
        self._predictor = self._input = self._output = self._array = None

    def versions(self) -> dict[str, str]:
        paddle, _ = _import_paddle()
        return {"paddlepaddle": paddle.__version__}

    # --- throughput scenario ---------------------------------------------------------------------------------
    def _plan_throughput(self, threads: int) -> dict:
        requests, source = plan_requests(self.options.requests, threads, "one predictor clone per core")
        return throughput_effective(requests, source, threads_per_request(threads, requests),
                                    "predictor clones, one per thread")

    def _requests(self, end2end: bool) -> Requests:
        runs = []
        for _ in range(self.effective["requests"]):
            clone = self._predictor.clone()  # shares the weights; its own input and output
            handle = clone.get_input_handle(clone.get_input_names()[0])
            output = clone.get_output_handle(clone.get_output_names()[0])
            handle.reshape(list(self._array.shape))
            handle.copy_from_cpu(self._array)
            runs.append(partial(_clone_end2end, clone, handle, output, self._array) if end2end else clone.run)
        return ThreadedRequests(runs, "paddle")


def _import_paddle():
    """(paddle, paddle.inference), imported without letting paddle replace our SIGTERM/SIGINT handlers (its
    C++ handler would end a cell without a word) or print its ccache warning into the results table."""
    with signals_held_for_import(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        return require("paddle", "export"), require("paddle.inference", "export")


def _clone_end2end(clone, handle, output, array: np.ndarray) -> None:
    handle.copy_from_cpu(array)
    clone.run()
    output.copy_to_cpu()
