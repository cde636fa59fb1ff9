"""Triton kernels for lowprec, installed as ``lowprec.kernels`` (the ``triton`` backend).

One op per file, each a kernel and its launcher (layer "kernels" of
docs/architecture.md: they import the torch-free core and each other, nothing above):

* ``nvfp4_math``     element math of NUMERICS 2-6 in integer / FP32 arithmetic
* ``amax``           max|x| and max|RHT(x^T)| in one read
* ``quantize_row_col`` fused rowwise + RHT-columnwise 1x16 quantization (RNE / SR)
* ``quantize_2d``    16x16 weight quantization, rowwise and transposed copies
* ``dequantize``     NVFP4 -> fp32 / bf16 / fp16
* ``nvfp4_gemm``     NVFP4 GEMM for Hopper (candidates and dispatch)
* ``fp8``            per-row E4M3 quantization and the FP8 GEMM
* ``config``         tiles and launch options; ``launches`` the named launch variants
* ``aot``            compile for sm_90 without a GPU: spills, SASS per element

Above them, in the backends layer: ``backend``, the Triton backend (the one adapter from
these launchers to the backend interface, as torch.library custom ops), and
``variants``, the variant names, the sweep's candidates and the committed winners.
Importing this package does not import Triton.
"""

import sys


def _step_aside():
    """Hand ``import kernels`` to the package of that name that is installed, if any.

    This folder is ``lowprec.kernels``; it is only ever executed as a top-level
    ``kernels`` when the repository root is on ``sys.path`` (``python -m ...`` run from
    it). A package named ``kernels`` exists on PyPI (Hugging Face's, which transformers
    imports), and it must win: Python would otherwise take this folder, the first match.
    So the import is re-done over ``sys.path`` without the repository root, and the
    module found replaces this one in ``sys.modules`` (which the import statement then
    returns); with none installed, ``import kernels`` fails as if this folder were absent.
    """
    import importlib.machinery
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", path)
    if spec is None:
        del sys.modules["kernels"]
        raise ModuleNotFoundError("No module named 'kernels' (the repository's kernels/ "
                                  "folder is lowprec's Triton sources, importable only as "
                                  "lowprec.kernels)", name="kernels")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)


if __name__ == "kernels":
    _step_aside()
