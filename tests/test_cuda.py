"""The CUDA helpers that need no GPU: the driver probe (against a stand-in driver library, see
tests/fake_driver.py) and the mapped-library scan; the teardown helper is tested in tests/test_trt.py."""

from __future__ import annotations

import ctypes

import pytest
from fake_driver import build_fake_libcuda

from runtimes.cuda import NO_DRIVER, cudart_versions, driver_status, mapped_libraries


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory) -> str:
    return str(build_fake_libcuda(tmp_path_factory.mktemp("driver")))


def test_no_driver_is_said_plainly():
    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("an NVIDIA driver library is installed here")
    except OSError:
        pass
    assert driver_status("13.0") == (NO_DRIVER, {})


def test_a_driver_with_a_gpu_passes(fake_libcuda):
    reason, facts = driver_status("13.0", 0, fake_libcuda)
    assert reason == ""
    assert facts == {"cuda_driver": "13.0", "cuda_devices": 1, "gpu": "Stand-in GPU", "compute_capability": "9.0"}


@pytest.mark.parametrize(("env", "device", "expected"), [
    ({"FAKE_CUDA_DEVICES": "0"}, 0, "the NVIDIA driver sees no GPU"),
    ({"FAKE_CUDA_DRIVER": "12080"}, 0, "the NVIDIA driver supports CUDA 12.8 but this software was built for "
                                       "CUDA 13.0: update the driver"),
    ({"FAKE_CUDA_DEVICES": "1"}, 1, "cuda:1 asked but 1 CUDA device(s) visible"),
    ({"FAKE_CUINIT": "100"}, 0, "the NVIDIA driver failed to initialise: CUDA_ERROR_NO_DEVICE"),
    ({"FAKE_CUINIT": "34"}, 0, "CUDA_ERROR_STUB_LIBRARY (libcuda.so.1 is the toolkit's stub, not a driver)"),
])
def test_driver_problems_are_one_line(fake_libcuda, monkeypatch, env, device, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reason, _ = driver_status("13.0", device, fake_libcuda)
    assert expected in reason


def test_mapped_libraries_reads_this_process(fake_libcuda):
    ctypes.CDLL(fake_libcuda)
    assert fake_libcuda in mapped_libraries()
    assert all("libcudart" in name for name in cudart_versions())  # only shared cudarts, by file name
