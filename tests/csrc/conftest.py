"""tests/csrc: the C++ kernels (CPU build, and the CUDA kernels through the CPU
simulator in cuda_sim/) against the reference, bit for bit.

CI builds the CPU extension (`pip install --no-build-isolation -e .`), so a missing or
broken extension fails these tests; only LOWPREC_NO_EXT=1 (compiled code switched off on
purpose) skips them.
"""

import os
import sys

import pytest
import torch

from lowprec import _C

# The test modules here share csrc_helpers.py (strategies, bit comparison); pytest runs with
# --import-mode=importlib, which puts no test directory on sys.path by itself.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _require_extension():
    if os.environ.get("LOWPREC_NO_EXT") == "1":
        pytest.skip("LOWPREC_NO_EXT=1: lowprec's compiled code is switched off")
    if _C.REASON is not None:
        pytest.fail(f"the compiled extension is required for tests/csrc: {_C.REASON}")
