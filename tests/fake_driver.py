"""A stand-in for the NVIDIA driver library (``libcuda.so.1``), compiled on demand, for the probe's tests.

The development machines have no GPU and no driver, so the probe's paths for "driver present" cannot be
reached with the real library. This one exports the driver API calls the probe makes (plus the symbol the
CUDA provider library imports from the driver) and answers from environment variables read at each call:
``FAKE_CUDA_DEVICES`` (GPUs, default 1), ``FAKE_CUDA_DRIVER`` (CUDA version x 1000, default 13000) and
``FAKE_CUINIT`` (cuInit's result, default 0). It cannot run kernels: a real session fails on it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = r"""
#include <stdlib.h>
#include <string.h>
static int env(const char *name, int fallback) { const char *s = getenv(name); return s ? atoi(s) : fallback; }
int cuInit(unsigned flags) { return env("FAKE_CUINIT", 0); }
int cuDriverGetVersion(int *v) { *v = env("FAKE_CUDA_DRIVER", 13000); return 0; }
int cuDeviceGetCount(int *n) { *n = env("FAKE_CUDA_DEVICES", 1); return 0; }
int cuDeviceGet(int *d, int i) { *d = i; return i < env("FAKE_CUDA_DEVICES", 1) ? 0 : 101; }
int cuDeviceGetName(char *name, int len, int d) { strncpy(name, "Stand-in GPU", len); return 0; }
int cuDeviceGetAttribute(int *v, int attribute, int d) { *v = attribute == 75 ? 9 : 0; return 0; }
int cuTensorMapEncodeTiled(void) { return 999; }
"""


def build_fake_libcuda(folder: Path) -> Path:
    """``folder/libcuda.so.1``; skips the test when no C compiler is installed."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (gcc/cc) to build the stand-in driver library")
    source = folder / "fake_libcuda.c"
    source.write_text(SOURCE)
    library = folder / "libcuda.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library
