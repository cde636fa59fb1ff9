#!/usr/bin/env bash
# Compile-only check of the CUDA sources for sm_90a and sm_100a, warnings as errors.
# Needs nvcc; needs no GPU and no CUDA build of torch.
#
# 1. csrc/quantize.cu (the quantize kernels) and csrc/nvfp4_gemm_values.cu (alpha's
#    one-thread kernel) with the extension's own flags
#    (csrc/nvcc_flags.txt), device and host warnings as errors, and ptxas told to
#    treat register spills and local-memory use as errors: a change that makes a kernel
#    spill fails here, on purpose. Both include only nvfp4_math.h, their launcher header
#    and the CUDA runtime, so what is checked is exactly what the CUDA extension compiles.
# 2. csrc/cuda_ops.cpp (the torch glue of the CUDA build) with the host compiler,
#    against torch's include paths and the CUDA headers. A CPU wheel of torch ships the
#    c10/cuda headers but not the generated c10/cuda/impl/cuda_cmake_macros.h; when it is
#    missing, a one-line stand-in (shared-library build, as in every torch wheel) is put
#    on the include path so the glue still gets type-checked. csrc/nvfp4_gemm_values_cuda.cpp
#    (the cuBLASLt glue) too where cublasLt.h is found (the toolkit, or CUBLASLT_INCLUDE);
#    a machine without it (a CPU torch, a toolkit of nvcc alone) says it skipped it.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
PY=${PYTHON:-python3}
if ! command -v "$NVCC" >/dev/null; then
  echo "nvcc_check: $NVCC not found (set NVCC or put nvcc on PATH)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mapfile -t flags < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' csrc/nvcc_flags.txt)
mapfile -t torch_includes < <("$PY" -c \
  "from torch.utils.cpp_extension import include_paths; print('\n'.join(include_paths()))")
isystem=()
for dir in "${torch_includes[@]}"; do isystem+=(-isystem "$dir"); done
if [ ! -f "${torch_includes[0]}/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  mkdir -p "$work/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' \
    > "$work/stub/c10/cuda/impl/cuda_cmake_macros.h"
  isystem+=(-isystem "$work/stub")
fi

echo "nvcc_check: $("$NVCC" --version | tail -n 2 | head -n 1)"
for kernels in quantize nvfp4_gemm_values; do
  echo "nvcc_check: csrc/$kernels.cu for sm_90a + sm_100a (+ compute_90 PTX)"
  "$NVCC" "${flags[@]}" -Icsrc -Werror all-warnings \
    -Xcompiler=-Wall,-Wextra,-Werror \
    -Xptxas=-warn-spills,-warn-lmem-usage,-Werror \
    -c "csrc/$kernels.cu" -o "$work/$kernels.o"
done

echo "nvcc_check: csrc/cuda_ops.cpp (host glue) against torch's headers"
"$NVCC" -std=c++20 -x c++ -DLOWPREC_WITH_CUDA=1 -Icsrc "${isystem[@]}" \
  -Xcompiler=-Wall,-Wextra,-Werror,-fsyntax-only -c csrc/cuda_ops.cpp -o "$work/cuda_ops.o"

toolkit=$(dirname "$(dirname "$(command -v "$NVCC")")")
cublaslt_include=${CUBLASLT_INCLUDE:-$toolkit/include}
if [ -f "$cublaslt_include/cublasLt.h" ]; then
  echo "nvcc_check: csrc/nvfp4_gemm_values_cuda.cpp (cuBLASLt glue), cublasLt.h from $cublaslt_include"
  "$NVCC" -std=c++20 -x c++ -DLOWPREC_WITH_CUDA=1 -Icsrc "${isystem[@]}" -isystem "$cublaslt_include" \
    -Xcompiler=-Wall,-Wextra,-Werror,-fsyntax-only -c csrc/nvfp4_gemm_values_cuda.cpp \
    -o "$work/nvfp4_gemm_values_cuda.o"
else
  echo "nvcc_check: skipped csrc/nvfp4_gemm_values_cuda.cpp: no cublasLt.h in $cublaslt_include (set CUBLASLT_INCLUDE)"
fi

echo "nvcc_check: OK"
