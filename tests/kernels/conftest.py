"""Triton kernel tests: every quantization bit for bit equal to ``lowprec.reference``.

Without a GPU the kernels run in Triton's CPU interpreter. Triton's ``@jit`` chooses
between compiling and interpreting when a kernel is decorated, so ``TRITON_INTERPRET``
must be set before anything imports ``lowprec.kernels`` (the top-level conftest sets it
too; this one keeps ``pytest tests/kernels`` self-contained).

The reference always runs on CPU copies: it is the spec that reproduces the independent
golden vectors there. On a GPU the kernels run on CUDA tensors and their outputs are
brought back for comparison.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_collection_modifyitems(items):
    # The interpreter runs kernels in numpy, which warns on the overflows, NaN casts and
    # divisions by zero that the kernels perform on purpose (and handle).
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore::RuntimeWarning"))


@pytest.fixture
def device():
    return DEVICE


def _bits(t):
    """The raw bits of a tensor, as an integer tensor of the same element size."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.detach().cpu().contiguous().view(view)


def _same_bits(got, want):
    """torch.equal on raw bits (NaN signs and payloads included)."""
    got_bits, want_bits = _bits(got), _bits(want)
    assert got_bits.shape == want_bits.shape, (got.shape, want.shape)
    if not torch.equal(got_bits, want_bits):
        diff = (got_bits != want_bits).nonzero()
        first = tuple(diff[0].tolist())
        raise AssertionError(f"{len(diff)} of {got_bits.numel()} entries differ; first at "
                             f"{first}: got {got_bits[first].item():#x}, want "
                             f"{want_bits[first].item():#x}")


@pytest.fixture
def same_bits():
    return _same_bits


@pytest.fixture
def same_triple():
    """Compare (data, scale, amax) triples bit for bit."""
    def check(got, want):
        _same_bits(got[0], want[0])
        _same_bits(got[1], want[1])
        _same_bits(got[2].reshape(()), want[2].reshape(()))
    return check
