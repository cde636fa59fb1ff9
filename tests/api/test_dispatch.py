"""The dispatch table: what backend='auto' runs, for this machine and for Hopper/Blackwell.

The expected tables are written out by hand from the dispatch rules (quantization in the
CUDA kernels, dequantization in Triton, Hopper's NVFP4 GEMM as dequantize + torch.mm,
Blackwell's as the native scaled_mm, FP8 GEMMs on torch._scaled_mm); none may be the
reference on a GPU. Mutation tried: the FP8 GEMM taking the reference on every
capability (test_gpu_tables and test_no_gpu_op_runs_the_reference fail).
"""

import json

import pytest
import torch

from lowprec import backends, cli, dispatch

HOPPER = {
    "quantize_nvfp4": "cuda:quantize_nvfp4",
    "quantize_row_col": "cuda:quantize_row_col",
    "quantize_weight_2d": "cuda:quantize_weight_2d",
    "dequantize_nvfp4": "triton:dequantize",
    "quantize_fp8": "triton:quantize_fp8",
    "quantize_fp8_row_col": "triton:quantize_fp8_row_col",
    # The quantizers write the values the emulated GEMM multiplies (values mode).
    "nvfp4_gemm": "dequant+torch.mm (operands: the quantizers' bf16 values)",
    "fp8_gemm": "torch:_scaled_mm",
}
# The native FP4 GEMM needs K % 32 == 0; other shapes take Hopper's, and the name says so.
BLACKWELL = dict(HOPPER, nvfp4_gemm="triton:scaled_mm_scales + torch:scaled_mm(nvfp4); "
                                       "K % 32 != 0: dequant+torch.mm")
# No FP8 tensor cores before sm_89: the FP8 GEMM is an emulation, named as one.
AMPERE = {**{op: name.replace("cuda:", "triton:") for op, name in HOPPER.items()},
          "fp8_gemm": "emulated:fp8_gemm(decode + fp32 torch.matmul, no FP8 tensor cores)"}


@pytest.mark.parametrize("capability, expected", [((9, 0), HOPPER), ((10, 0), BLACKWELL),
                                                  ((8, 0), AMPERE)])
def test_gpu_tables(capability, expected):
    assert dispatch.table(capability)[1] == expected


def test_the_cublaslt_values_gemm_is_named_where_chosen(monkeypatch):
    from lowprec.backends import cuda
    monkeypatch.setattr(cuda, "VALUES_GEMM", "cublaslt")
    assert dispatch.table((9, 0))[1]["nvfp4_gemm"] == (
        "cuda:nvfp4_gemm_values(cuBLASLt; with a bias or an fp16 output: dequant+torch.mm) "
        "(operands: the quantizers' bf16 values)")
    assert dispatch.table((10, 0))[1]["nvfp4_gemm"] == BLACKWELL["nvfp4_gemm"]


def test_blackwell_with_a_torch_without_the_native_gemm_names_the_emulation(monkeypatch):
    """The native GEMM's API is asked once, at import: without it a Blackwell GPU runs the
    Hopper emulation, on the quantizers' values, and the table says so."""
    from lowprec import blackwell
    monkeypatch.setattr(blackwell, "TORCH_REASON", "torch 0.0 has no float4_e2m1fn_x2 dtype")
    assert dispatch.table((10, 0))[1]["nvfp4_gemm"] == HOPPER["nvfp4_gemm"]


def test_the_cublaslt_gemm_where_not_built_warns_and_is_not_taken(monkeypatch):
    from lowprec.backends import cuda
    monkeypatch.setattr(cuda, "VALUES_GEMM", "cublaslt")
    monkeypatch.setattr(cuda._C, "cublaslt_reason", lambda: "built without it (test)")
    with pytest.warns(RuntimeWarning, match="not cuBLASLt: built without it"):
        assert cuda.own_values_gemm((9, 0)) is None
    assert cuda.own_values_gemm((9, 0), installed=True)[0] is cuda.gemm_values_cublaslt
    assert cuda.own_values_gemm((10, 0), installed=True) is None     # the native GEMM


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0), (10, 0), (12, 0)])
def test_no_gpu_op_runs_the_reference(capability):
    _, ops = dispatch.table(capability)
    assert set(ops) == set(backends.OPS)
    assert not [op for op, name in ops.items() if name.startswith(("reference", "none"))]


def test_auto_never_falls_back_to_the_reference_on_cuda():
    assert "reference" not in backends.AUTO_ORDER["cuda"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU table")
def test_this_machine_table_names_the_functions_auto_returns():
    where, ops = dispatch.table()
    assert "CPU" in where
    for op, name in ops.items():
        backend = name.split(":")[0]
        module = backends._load(backend)[0]
        assert backends.get("auto", op, "cpu") is getattr(module, op), op


def test_cli_json_and_text(capsys):
    assert cli.main(["info", "--dispatch", "--capability", "9.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == HOPPER
    assert cli.main(["info", "--dispatch", "--capability", "10.0"]) == 0
    out = capsys.readouterr().out
    assert "capability 10.0" in out and "torch:scaled_mm(nvfp4)" in out
    assert cli.main(["info", "--dispatch"]) == 0
    assert "quantize_row_col" in capsys.readouterr().out


def test_cli_bad_capability_is_one_line_and_exit_2(capsys):
    assert cli.main(["info", "--dispatch", "--capability", "hopper"]) == 2
    err = capsys.readouterr().err
    assert err == "lowprec info: error: --capability must look like 9.0 or 10.0; got 'hopper'\n"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_this_gpu_runs_what_its_capability_table_says():
    """On the GPU itself (CUDA extension built, Triton installed): the same table as for
    its capability, so nothing there runs the reference."""
    capability = torch.cuda.get_device_capability()
    assert dispatch.table()[1] == dispatch.table(capability)[1]
