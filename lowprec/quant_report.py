"""Quantization error of each format on a generated tensor: the quick look at the numerics.

Used by ``lowprec demo``: it needs no data and no training, runs in seconds,
and shows what each format costs in accuracy on an activation-like tensor (Gaussian
with a few large outlier channels, as in LLM activations) and on a GEMM with it.
"""

import torch

import lowprec
from lowprec import table


def make_inputs(m=512, k=1024, n=512, seed=0):
    """Activation-like X [m, k] with outlier channels and a weight W [n, k], FP32."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen)
    outliers = torch.randperm(k, generator=gen)[: k // 64]
    x[:, outliers] *= 20.0
    w = torch.randn(n, k, generator=gen) / k ** 0.5
    return x, w


def _relative_error(approx, exact):
    return ((approx.double() - exact.double()).norm() / exact.double().norm()).item()


def error_rows(x, w, backend="auto"):
    """[(format, tensor relative error, GEMM relative error, bits per element)]."""
    exact = x.double() @ w.double().T
    rows = []
    bx, bw = x.to(torch.bfloat16), w.to(torch.bfloat16)
    rows.append(("bf16", _relative_error(bx, x), _relative_error(bx.float() @ bw.float().T,
                                                                 exact), 16.0))
    fx, fw = lowprec.quantize_fp8(x, backend=backend), lowprec.quantize_fp8(w, backend=backend)
    rows.append(("fp8 e4m3, per-row scale", _relative_error(fx.dequantize(), x),
                 _relative_error(lowprec.fp8_gemm(fx, fw, out_dtype=torch.float32,
                                                  backend=backend), exact), 8.0 + 32 / x.shape[1]))
    variants = [("nvfp4 1x16", {}, {}),
                ("nvfp4 1x16, W 16x16", {}, {"block": "16x16"}),
                ("nvfp4 1x16 + RHT", {"rht": True}, {"rht": True})]
    for name, kx, kw in variants:
        qx = lowprec.quantize_nvfp4(x, backend=backend, **kx)
        qw = lowprec.quantize_nvfp4(w, backend=backend, **kw)
        target = lowprec.reference.rht(x).float() if kx.get("rht") else x
        out = lowprec.nvfp4_gemm(qx, qw, out_dtype=torch.float32, backend=backend)
        rows.append((name, _relative_error(qx.dequantize(), target),
                     _relative_error(out, exact), 4.5))
    return rows


def format_table(rows):
    return table.format_table(
        ("format", "bits/elem", "rel. err X", "rel. err X W^T"),
        [(name, f"{bits:.2f}", f"{tensor_err:.2e}", f"{gemm_err:.2e}")
         for name, tensor_err, gemm_err, bits in rows], align="lrrr")
