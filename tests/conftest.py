"""Test-wide setup.

Without a GPU, Triton kernels run in its CPU interpreter. Triton decides between the
compiler and the interpreter when a kernel is decorated, so the switch must be set
before any test module imports Triton code.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# In-tree copy; provenance and layout in tests/data/README.md.
GOLDEN_PATH = os.path.join(os.path.dirname(__file__), "data", "nvfp4_public_v1.pt")


@pytest.fixture(scope="session")
def golden():
    """The golden vectors of tests/data (an independent implementation, see its README)."""
    if not os.path.exists(GOLDEN_PATH):
        pytest.fail(f"golden vectors missing at {GOLDEN_PATH}: tests/data is part of the "
                    "repository; restore it from git")
    return torch.load(GOLDEN_PATH)


@pytest.fixture(autouse=True, scope="session")
def empty_user_cache(tmp_path_factory):
    """The planner reads measured device costs from the user's cache (``lowprec bench``
    writes it); tests plan with the packaged defaults whatever that cache holds."""
    before = os.environ.get("LOWPREC_CACHE_DIR")
    os.environ["LOWPREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("lowprec-cache"))
    yield
    if before is None:
        del os.environ["LOWPREC_CACHE_DIR"]
    else:
        os.environ["LOWPREC_CACHE_DIR"] = before


@pytest.fixture
def capture_scalar_outputs():
    """Let dynamo capture data-dependent scalars (e.g. MoE expert row counts).

    Set through torch's own ``config.patch``, never pytest's monkeypatch: from pytest 9.2
    on, monkeypatch reads the old value from the module ``__dict__``, finds none in
    torch's config module and *deletes* the option on undo, which hides it from every
    later compile in the session."""
    import torch._dynamo
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        yield
