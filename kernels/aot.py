"""Compile the kernels for Hopper (sm_90) ahead of time, without a GPU, and report on them.

The interpreter proves the bits but not that the code compiles: Triton's GPU front end is
stricter, and only the compiled code shows register use, spills, load widths, whether
the GEMM reaches the tensor cores, and how many instructions each element costs. Triton
compiles for a named target with the ptxas it ships, so all of this runs on any machine.

    python -m lowprec.kernels.aot            # table: registers, spills, SASS per element
    python -m lowprec.kernels.aot --json     # the same as JSON (used by the tests)

Run it without ``TRITON_INTERPRET=1`` (under the interpreter ``@jit`` returns objects the
compiler cannot take).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .amax import _amax_kernel
from .dequantize import _dequantize_kernel
from .fp8 import _quantize_fp8_kernel
from .nvfp4_gemm import _epilogue_kernel, _gemm_kernel
from .quantize_2d import _quantize_2d_kernel
from .quantize_row_col import _quantize_row_col_kernel
from .scaled_mm_scales import _scaled_mm_scales_kernel
from .sr_key import _next_key_kernel

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
# Integer arguments the runtime sees as multiples of 16 (it specializes on that), hinted
# the same way here so that loads vectorize as they will on the GPU.
ALIGNED_INTS = {"M", "N", "K", "R", "stride_m", "stride_n", "stride_r", "col_blocks"}


def _specs():
    """name -> (kernel, signature, constexprs, num_warps, num_stages, elements per thread)."""
    q1 = dict(x_ptr="*i16", M="i32", K="i32", stride_m="i32", signs_ptr="*fp32",
              row_amax_ptr="*fp32", col_amax_ptr="*fp32", row_amax_out_ptr="*fp32",
              col_amax_out_ptr="*fp32", row_data_ptr="*u8", row_scale_ptr="*u8",
              col_words_ptr="*i64", col_scale_ptr="*u8", seed_ptr="*i64", col_blocks="i32",
              seed="u64", row_offset="u64", col_offset="u64")
    tile = dict(stride_k=1, CHUNKS=1, BLOCK_K=256)           # config.tile_config on a GPU
    per_thread = 16 * 256 // 128

    def fused(row, col, rht, sr, key_in_memory=False):
        return (_quantize_row_col_kernel, q1,
                dict(tile, X_KIND=1, ROW=row, COL=col, COL_RHT=rht, ROW_SR=sr and row,
                     COL_SR=sr and col, HW_BF16=True, SEED_IN_MEMORY=key_in_memory), 4, 1,
                per_thread)

    gemm = dict(a_data_ptr="*u8", a_scale_ptr="*u8", b_data_ptr="*u8", b_scale_ptr="*u8",
                a_amax_ptr="*fp32", b_amax_ptr="*fp32", bias_ptr="*i16", out_ptr="*i16",
                M="i32", N="i32", K="i32")
    gemm_consts = dict(HAS_BIAS=True, BIAS_KIND=1, OUT_KIND=1, BLOCK_M=128, BLOCK_N=128,
                       GROUP_M=8)
    return {
        "quantize_row_col row RNE": fused(True, False, False, False),
        "quantize_row_col row SR": fused(True, False, False, True),
        "quantize_row_col col RHT RNE": fused(False, True, True, False),
        "quantize_row_col row+col RHT RNE": fused(True, True, True, False),
        "quantize_row_col row+col RHT SR": fused(True, True, True, True),
        "quantize_row_col row+col RHT SR, device key": fused(True, True, True, True, True),
        "quantize_2d row+col": (
            _quantize_2d_kernel,
            dict(w_ptr="*i16", N="i32", K="i32", stride_n="i32", amax_ptr="*fp32",
                 amax_out_ptr="*fp32", col_amax_out_ptr="*fp32", row_data_ptr="*u8",
                 row_scale_ptr="*u8", col_words_ptr="*i64", col_scale_ptr="*u8",
                 seed="u64", offset="u64"),
            dict(tile, W_KIND=1, COL=True, STOCHASTIC=False), 4, 1, per_thread),
        "next SR key (device keys)": (
            _next_key_kernel,
            dict(counts_ptr="*i64", key_ptr="*i64", stream_base="u64", call_base="u64"),
            dict(SLOT=0), 1, 1, 1),
        "amax row+col RHT": (
            _amax_kernel,
            dict(x_ptr="*i16", M="i32", K="i32", stride_m="i32", signs_ptr="*fp32",
                 out_bits_ptr="*i32"),
            dict(tile, X_KIND=1, COL_RHT=True), 4, 1, per_thread),
        "dequantize": (
            _dequantize_kernel,
            dict(data_ptr="*u8", scale_ptr="*u8", amax_ptr="*fp32", out_ptr="*i16", R="i32",
                 K="i32"),
            dict(APPLY_GLOBAL=True, OUT_KIND=1, BLOCK_R=16, BLOCK_K=256), 4, 1, per_thread),
        "quantize_fp8": (
            _quantize_fp8_kernel,
            dict(x_ptr="*i16", data_ptr="*u8", scale_ptr="*fp32", R="i32", K="i32",
                 stride_r="i32"),
            dict(stride_k=1, X_KIND=1, BLOCK_R=4, BLOCK_K=512), 4, 1, None),
        "gemm (a) fused": (_gemm_kernel, gemm,
                           dict(gemm_consts, PREDEQUANTIZED=False, BLOCK_K=128), 8, 3, None),
        "gemm (c) fp16 tiles": (_gemm_kernel, dict(gemm, a_data_ptr="*fp16", b_data_ptr="*fp16"),
                                dict(gemm_consts, PREDEQUANTIZED=True, BLOCK_K=64), 8, 3, None),
        "gemm (b) epilogue": (
            _epilogue_kernel,
            dict(acc_ptr="*fp32", a_amax_ptr="*fp32", b_amax_ptr="*fp32", bias_ptr="*i16",
                 out_ptr="*i16", M="i32", N="i32"),
            dict(HAS_BIAS=True, BIAS_KIND=1, OUT_KIND=1, BLOCK_M=16, BLOCK_N=256), 4, 1,
            16 * 256 // 128),
        "scaled_mm scales": (
            _scaled_mm_scales_kernel,
            dict(a_scale_ptr="*u8", b_scale_ptr="*u8", a_amax_ptr="*fp32", b_amax_ptr="*fp32",
                 a_out_ptr="*u8", b_out_ptr="*u8", global_ptr="*fp32", a_rows="i32",
                 b_rows="i32", cols="i32", a_tiles="i32"),
            {}, 4, 1, 512 // 128),
    }


def compile_for_hopper(fn, signature, constexprs, num_warps, num_stages, aligned_ints=()):
    """``triton.compile`` for sm_90 with the options the launchers use; pointers and the
    integers of ``ALIGNED_INTS`` (plus ``aligned_ints``) hinted as multiples of 16."""
    names = fn.arg_names
    signature = {name: signature.get(name, "constexpr") for name in names}
    hinted = ALIGNED_INTS | set(aligned_ints)
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(names)
               if signature[name].startswith("*") or name in hinted}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=aligned)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages,
                                   "enable_fp_fusion": False})


def _tool(name, *args):
    return subprocess.run([os.path.join(BIN, name), *args], capture_output=True, text=True,
                          check=True).stdout


def report(compiled):
    """Resource usage and instruction facts of one compiled kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        resources = _tool("cuobjdump", "-res-usage", cubin)
        usage = {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", resources)}
        sass = [line for line in _tool("nvdisasm", "-c", cubin).splitlines()
                if re.match(r"\s*/\*[0-9a-f]+\*/\s", line)]
    # Straight-line main path: up to the first unconditional EXIT (the division slow path
    # and other cold code come after it).
    main = next((i + 1 for i, line in enumerate(sass)
                 if re.search(r"\sEXIT\b", line) and not re.search(r"@!?U?P\d", line)), len(sass))
    ptx = compiled.asm["ptx"]
    return dict(usage, sass=len(sass), sass_main=main, ftz=".ftz" in ptx,
                wgmma="wgmma.mma_async" in ptx, fp32_acc="f32.f16.f16" in ptx,
                e4m3_cvt="cvt.rn.f16x2.e4m3x2" in ptx, ld_v4="ld.global.v4" in ptx)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "0")   # we pass it; silence the knob
    results = {}
    for name, (fn, sig, consts, warps, stages, per_thread) in _specs().items():
        facts = report(compile_for_hopper(fn, sig, consts, warps, stages))
        if per_thread:
            facts["sass_per_element"] = round(facts["sass_main"] / per_thread, 1)
        results[name] = facts
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'kernel (sm_90)':32s} {'regs':>4s} {'spill':>5s} {'SASS':>5s} {'/elem':>6s}")
    for name, f in results.items():
        print(f"{name:32s} {f['REG']:4d} {f['LOCAL'] + f['STACK']:5d} {f['sass_main']:5d} "
              f"{f.get('sass_per_element', ''):>6}")


if __name__ == "__main__":
    main()
