// LP_LAUNCH: how the .cu files launch kernels, so that tests/csrc/cuda_sim can run these
// very kernels on the CPU (one std::thread per CUDA thread; its sim.h, reached through
// its cuda_runtime.h, defines LP_LAUNCH first) and check them against the reference
// without a GPU.
#pragma once

#include <cuda_runtime.h>

#if !defined(LP_LAUNCH)
#define LP_LAUNCH(kernel, grid, threads, stream, ...) \
  kernel<<<(grid), (threads), 0, (stream)>>>(__VA_ARGS__)
#endif
