"""Kernel launches and device bytes of one Linear forward+backward on the Hopper path.

Traced without a GPU (``lowprec.launch_trace``: fake tensors, compute capability 9.0,
every backend installed) at a layer of the 355M GPT (8192 tokens, 1024 -> 4096), bf16
autocast, FP32 master weights. Each kernel the layer would launch is named, so a change
that adds one fails here with the list.

The counts are ceilings at what the code does now. Issue 20's launch targets hold for a
Linear without bias (the bias costs three launches in every mode: its epilogue, sum and
cast): fp8 10, nvfp4 12 (10 for a micro-batch that reuses its weight's copies,
tests/training/test_weight_reuse.py). Bytes: per Linear, fp8 1.59x and Hopper nvfp4
3.18x bf16; per whole 355M block (norms, attention and activations included) fp8 1.30x,
nvfp4 2.10x on Hopper and 1.14x on Blackwell's native path (bench/KERNELS.md says why the
Hopper emulation of NVFP4 cannot reach 1.5x).
Mutations tried: quantizing W^T again in the backward (fails); keeping X^T packed
(nvfp4: 13, a dequantize launch, fails);
the FP8 GEMM's scaling as separate multiplies (fails); FP8 layouts made by
transpose + two casts (fp8: 16, fails).
"""

import pytest

from lowprec import launch_trace
from lowprec.backends import cuda
from lowprec.bench import bench_launches
from lowprec.recipe import Recipe

M, K, N = 8192, 1024, 4096

# The most launches and MiB one forward+backward may take.
CEILINGS = {"bf16": (8, 377), "nvfp4": (14, 1049), "fp8": (13, 817)}
RECIPES = {"bf16": Recipe.uniform("bf16"), "nvfp4": Recipe(), "fp8": Recipe.uniform("fp8")}


def traced(mode, bias=True, capability=(9, 0)):
    setup, step = launch_trace.linear_step(M, K, N, RECIPES[mode], bias=bias)
    return launch_trace.trace(step, setup, capability=capability)


@pytest.mark.parametrize("mode", list(CEILINGS))
def test_launches_and_bytes_per_linear_on_hopper(mode):
    trace = traced(mode)
    launches, mib = CEILINGS[mode]
    assert trace.count <= launches, trace.by_kernel()
    assert trace.nbytes / 2**20 <= mib, trace.by_kernel()
    assert trace.host_syncs == 0, trace.by_kernel()       # the GPU never waits for the host


def test_the_baseline_is_what_nn_linear_launches_under_autocast():
    """An independent count: autocast casts W and b to bf16 (2), addmm (1); backward
    dgrad and wgrad mm (2), the bias sum (1), the casts back to FP32 (2). Its bytes, each
    tensor read or written once per launch: the formula below."""
    trace = traced("bf16")
    assert trace.by_kernel() == {"aten::_to_copy": 4, "aten::addmm": 1, "aten::mm": 2,
                                 "aten::sum": 1}
    bf16, f32 = 2, 4
    casts = (N * K * (f32 + bf16) + N * (f32 + bf16)) * 2        # forward and backward
    addmm = (M * K + N * K + N + M * N) * bf16
    dgrad = (M * N + N * K + M * K) * bf16
    wgrad = (M * N + M * K + N * K) * bf16
    bias_sum = (M * N + N) * bf16
    assert trace.nbytes == casts + addmm + dgrad + wgrad + bias_sum


def test_the_quantized_paths_launch_what_the_kernel_table_names():
    nvfp4 = traced("nvfp4").by_kernel()
    # X and dY: one fused quantize each; W: one 2-D quantize; each after its amax pass
    # (no memset). Every NVFP4 GEMM on Hopper is a bf16 mm into FP32 and the epilogue, on
    # the values the quantizers wrote (the saved X^T included): nothing is dequantized.
    assert nvfp4["cuda:quantize_row_col"] == 2 and nvfp4["cuda:quantize_weight_2d"] == 1
    assert nvfp4["cuda:amax"] == 3 and not any("memset" in k for k in nvfp4)
    assert "triton:_dequantize_kernel" not in nvfp4 and nvfp4["aten::mm"] == 3
    assert nvfp4["triton:_epilogue_kernel"] == 3
    fp8 = traced("fp8").by_kernel()
    # X, W and dY: both FP8 layouts from one column-scale pass and one fused cast each.
    assert fp8["triton:_column_scale_kernel"] == 3
    assert fp8["triton:_quantize_fp8_row_col_kernel"] == 3 and fp8["aten::_scaled_mm"] == 3
    assert not {"aten::mul", "aten::ones", "aten::clone"} & set(fp8)


def test_without_bias():
    """Without bias (Llama-style), issue 20's targets: fp8 at most 10 launches (3 x 2
    casts, 3 GEMMs, wgrad's FP32 scaling epilogue), nvfp4 at most 12 (3 amax, 3
    quantize, 3 mm, 3 epilogues)."""
    fp8, nvfp4 = traced("fp8", bias=False), traced("nvfp4", bias=False)
    assert fp8.count <= 10, fp8.by_kernel()
    assert nvfp4.count <= 12, nvfp4.by_kernel()


def test_the_blackwell_path_runs_the_native_gemm_with_its_arguments_in_one_launch():
    """sm_100: the quantizers write packed copies, and each of the three GEMMs is torch's
    block-scaled FP4 GEMM after one launch that writes both operands' swizzled scales
    and global decode scales (``kernels.scaled_mm_scales``); without bias it writes bf16
    (fprop, dgrad) or FP32 (wgrad) itself: 12 launches, as on Hopper. Before: a swizzle
    copy per operand and a decode-scales launch per GEMM, 18 launches; before that the
    reference's index-based swizzle and elementwise decode scales, 173 launches and 3.55x
    bf16's bytes."""
    trace = traced("nvfp4", bias=False, capability=(10, 0))
    assert trace.by_kernel() == {"cuda:amax": 3, "cuda:quantize_row_col": 2,
                                 "cuda:quantize_weight_2d": 1,
                                 "triton:_scaled_mm_scales_kernel": 3,
                                 "aten::_scaled_mm_v2": 3}
    assert trace.host_syncs == 0
    assert trace.nbytes / traced("bf16", bias=False).nbytes <= 1.3


@pytest.mark.parametrize("mode,capability,ceiling", [
    ("fp8", (9, 0), 1.31), ("nvfp4", (9, 0), 2.11), ("nvfp4", (10, 0), 1.15)])
def test_bytes_per_whole_block(mode, capability, ceiling):
    """The 355M GPT's whole block, forward + backward (lowprec.bench.bench_launches):
    issue 20's bytes <= 1.5x bf16 holds for fp8 and for Blackwell's nvfp4, not for the
    Hopper emulation of nvfp4 (ceiling at what it does now)."""
    base = bench_launches.whole_block("gpt355m", M, capability, RECIPES["bf16"])[1]
    nbytes = bench_launches.whole_block("gpt355m", M, capability, RECIPES[mode])[1]
    assert nbytes / base <= ceiling


def test_the_cublaslt_values_gemm_drops_the_fp32_products(monkeypatch):
    """``lowprec.backends.cuda.VALUES_GEMM = "cublaslt"`` (not the default until a GPU has
    checked and timed it): each Hopper NVFP4 GEMM without bias is alpha's one-thread
    launch and one cuBLASLt call that writes the output itself. Still 12 launches per
    Linear; per whole 355M block the FP32 products are gone: written by mm and read back
    by the epilogue, 2 x 4 bytes per element of every GEMM output (fprop T x N, dgrad
    T x K, wgrad N x K of each of the four layers), less 16 bytes per GEMM that alpha's
    launch and the amaxes the GEMM now reads add. Hand-counted from the shapes: 1.53x
    bf16, issue 20's 1.5x still missed. With a bias the fprop keeps mm + epilogue."""
    base = bench_launches.whole_block("gpt355m", M, (9, 0), RECIPES["bf16"])[1]
    before = bench_launches.whole_block("gpt355m", M, (9, 0), RECIPES["nvfp4"])[1]
    monkeypatch.setattr(cuda, "VALUES_GEMM", "cublaslt")
    assert traced("nvfp4", bias=False).by_kernel() == {
        "cuda:amax": 3, "cuda:quantize_row_col": 2, "cuda:quantize_weight_2d": 1,
        "cuda:gemm_scalars": 3, "cuda:nvfp4_gemm_values": 3}
    with_bias = traced("nvfp4", bias=True).by_kernel()
    assert with_bias["cuda:nvfp4_gemm_values"] == 2 and with_bias["aten::mm"] == 1
    assert with_bias["triton:_epilogue_kernel"] == 1
    after = bench_launches.whole_block("gpt355m", M, (9, 0), RECIPES["nvfp4"])[1]
    layers = [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)]       # (K, N)
    fp32_products = sum(4 * (M * n + M * k + n * k) for k, n in layers)
    assert before - after == 2 * fp32_products - 16 * 3 * len(layers)
    assert 1.52 < after / base < 1.53

