"""Kernel launches and device bytes of a CUDA code path, counted without a GPU.

``trace(fn, capability=(9, 0))`` runs ``fn`` under ``FakeTensorMode`` (tensors with
shapes and dtypes but no memory) as if on a GPU of that compute capability with lowprec
fully installed, and records every kernel the real run would launch:

* aten ops that compute launch one kernel each; views, allocations (``empty``) and
  other metadata ops launch none; a fill, a copy between devices, ``.item()`` one each
  (``.item()`` also makes the host wait: counted in ``host_syncs``).
* lowprec's Triton ops run their real Python bodies on the fake tensors, with each
  Triton kernel launch (``JITFunction.run``, or the interpreter's) recorded instead of
  run.
* the CUDA extension's ops (``lowprec_C::*``) launch what ``csrc/cuda_ops.cpp`` launches:
  the amax pass when no amax is given (it stores per-block partials into uninitialised
  scratch: no memset), then the quantize kernel, which reduces the partials in its
  prologue; ``nvfp4_gemm_values`` (``csrc/nvfp4_gemm_values_cuda.cpp``) alpha's
  one-thread launch, then the cuBLASLt GEMM (``CUDA_EXTENSION_LAUNCHES``).

Bytes: each launch reads or writes its tensor arguments and outputs once (distinct
tensors, a view counted as the tensor it views), i.e. its compulsory traffic.

The counts are what ``tests/training/test_launch_counts.py`` holds the training layer
to, and what ``python -m lowprec.bench.bench_launches`` reports at real shapes.
"""

import contextlib
import dataclasses
from unittest import mock

import torch
import triton.runtime.interpreter as triton_interpreter
import triton.runtime.jit as triton_jit
from torch._library import custom_ops
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lowprec import backends, linear_layer
from lowprec.kernels import fp8

# aten ops that launch nothing: allocation and metadata.
NO_LAUNCH = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty",
             "aten::new_empty_strided", "aten::detach", "aten::lift_fresh",
             "aten::_unsafe_view", "aten::set_", "aten::resize_", "aten::sym_size",
             "aten::sym_stride", "aten::sym_numel", "aten::is_same_size"}
HOST_SYNC = {"aten::_local_scalar_dense"}


def _amax_launches(amax_given):
    """The amax pass (no memset: its partials go to uninitialised scratch), unless the
    caller gave every amax (csrc/cuda_ops.cpp)."""
    return [] if amax_given else ["amax"]


# Kernels each op of the CUDA extension launches, from its arguments (cuda_ops.cpp,
# schemas in bindings.cpp); neither the kernel variant (default 0) nor values mode (the
# trailing row_values / col_values / values, default False: the same kernels, other
# stores) changes a launch.
CUDA_EXTENSION_LAUNCHES = {
    "lowprec_C::quantize_nvfp4":
        lambda x, block_rows, rht_mask, stochastic, seed, offset, amax, variant=0:
        _amax_launches(amax is not None) + ["quantize_nvfp4"],
    "lowprec_C::quantize_weight_2d":
        lambda w, columnwise, stochastic, seed, offset, amax, variant=0, values=False:
        _amax_launches(amax is not None) + ["quantize_weight_2d"],
    "lowprec_C::quantize_row_col":
        lambda x, rht_mask, rowwise, columnwise, row_sr, col_sr, seed, row_offset,
        col_offset, row_amax, col_amax, variant=0, row_values=False, col_values=False,
        seed_tensor=None:
        _amax_launches((not rowwise or row_amax is not None) and
                       (not columnwise or col_amax is not None)) + ["quantize_row_col"],
    # csrc/nvfp4_gemm_values_cuda.cpp: alpha's one-thread launch, then the cuBLASLt GEMM.
    "lowprec_C::nvfp4_gemm_values":
        lambda a, a_amax, b, b_amax, out_dtype: ["gemm_scalars", "nvfp4_gemm_values"],
}


@dataclasses.dataclass
class Launch:
    kernel: str       # aten op, Triton kernel or CUDA extension kernel
    nbytes: int       # compulsory bytes: distinct tensors read or written, once each


@dataclasses.dataclass
class Trace:
    launches: list
    host_syncs: int = 0

    @property
    def count(self):
        return len(self.launches)

    @property
    def nbytes(self):
        return sum(launch.nbytes for launch in self.launches)

    def by_kernel(self):
        """``{kernel: launches}`` in first-launch order."""
        counts = {}
        for launch in self.launches:
            counts[launch.kernel] = counts.get(launch.kernel, 0) + 1
        return counts


def _tensors(*trees):
    """Distinct tensors among the leaves of ``trees``, a view standing for its base."""
    seen = {}
    for tree in trees:
        for leaf in tree_flatten(tree)[0]:
            if isinstance(leaf, torch.Tensor):
                base = leaf if leaf._base is None else leaf._base
                seen[id(base)] = base
    return list(seen.values())


def _nbytes(*trees):
    return sum(t.numel() * t.element_size() for t in _tensors(*trees))


def _extension_launch_bytes(kernel, args, out):
    """Compulsory bytes of one kernel of a CUDA extension op: the amax pass reads the
    input; alpha's launch reads the two amaxes and writes two FP32 scalars; the op's main
    kernel reads its tensor arguments and writes its outputs."""
    if kernel == "amax":
        return _nbytes(args[0])
    if kernel == "gemm_scalars":
        return _nbytes(args[1], args[3]) + 8
    return _nbytes(args, out)


class _Recorder(TorchDispatchMode):
    def __init__(self, trace):
        super().__init__()
        self.trace = trace

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name.startswith("prim::"):          # metadata (prim::device, ...)
            return func(*args, **kwargs)
        if name in CUDA_EXTENSION_LAUNCHES:
            out = func(*args, **kwargs)
            for kernel in CUDA_EXTENSION_LAUNCHES[name](*args, **kwargs):
                self.trace.launches.append(
                    Launch(f"cuda:{kernel}", _extension_launch_bytes(kernel, args, out)))
            return out
        if name.startswith("lowprec::triton_"):
            # Its Python body, on the fake tensors: its Triton launches are recorded by
            # the patched JITFunction.run, its torch ops by this mode again.
            with self:
                return custom_ops.OPDEFS[name]._init_fn(*args, **kwargs)
        out = func(*args, **kwargs)
        if name in HOST_SYNC:
            self.trace.host_syncs += 1
        if not (func.is_view or name in NO_LAUNCH):
            self.trace.launches.append(Launch(name, _nbytes(args, kwargs, out)))
        return out


@contextlib.contextmanager
def _as_if_on_gpu(capability):
    """The training layer runs the kernels of a GPU of ``capability`` with every backend
    installed, on (fake) CPU tensors.

    Fake CPU tensors stand in for CUDA ones: a CPU build of torch cannot run autograd on
    CUDA fake tensors (it has no CUDA device guard), and CPU autocast casts a linear's
    operands as CUDA autocast does. Only the kernel table decides which kernels run.
    """
    table = backends.KernelTable(torch.device("cuda"), installed=True, capability=capability)
    # The steady state: the FP8 GEMM's unit scale was made by an earlier call (a real
    # tensor: under the fake mode it would be made, and launched, on every call).
    unit_scale = {torch.device("cpu"): torch.ones((), dtype=torch.float32)}
    # ``t.is_cuda`` branches in the kernels' host code take their GPU side.
    with mock.patch.object(FakeTensor, "is_cuda", property(lambda self: True)), \
            mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.get_device_capability", return_value=capability), \
            mock.patch.dict(backends._TABLES, {torch.device("cpu"): table}), \
            mock.patch.dict(fp8._ONES, unit_scale):
        yield


def trace(step, setup=None, capability=(9, 0)):
    """The ``Trace`` of ``step(setup())`` (or ``step()``): ``setup`` builds the inputs (not
    recorded), ``step`` runs lowprec on them. Both run under the fake mode: tensors are
    made on the CPU and have no memory, so real shapes are cheap."""
    result = Trace([])

    def record_triton_launch(kernel, *args, grid=None, warmup=False, **kwargs):
        nbytes = _nbytes(args, kwargs)
        result.launches.append(Launch(f"triton:{kernel.fn.__name__}", nbytes))

    with _as_if_on_gpu(capability), \
            mock.patch.object(triton_jit.JITFunction, "run", record_triton_launch), \
            mock.patch.object(triton_interpreter.InterpretedFunction, "run",
                              record_triton_launch), \
            FakeTensorMode(allow_non_fake_inputs=True):
        inputs = setup() if setup is not None else None
        with _Recorder(result):
            step() if setup is None else step(inputs)
    return result


def linear_step(m, k, n, recipe, bias=True, dtype=torch.bfloat16):
    """``(setup, step)`` for ``trace``: one ``lowprec.Linear`` forward + backward on
    ``x [m, k]`` under autocast to ``dtype`` with FP32 master weights, as in training.
    An all-BF16 recipe is ``nn.Linear``'s computation (the baseline)."""
    def setup():
        layer = linear_layer.Linear(k, n, bias=bias, recipe=recipe)
        x = torch.empty(m, k, dtype=dtype, requires_grad=True)
        return layer, x, torch.empty(m, n, dtype=dtype)
    return setup, forward_backward(dtype)


def forward_backward(dtype=torch.bfloat16):
    """The ``step`` of ``trace`` for inputs ``(module, x, grad of the output)``: the
    module's forward under autocast to ``dtype``, then its backward."""
    def step(inputs):
        module, x, grad = inputs
        with torch.autocast("cpu", dtype=dtype):
            y = module(x)
        y.backward(grad)
    return step
