"""Backend registry: which implementations exist, which can run here, and why not.

A backend is a module that defines ``availability(device_type)`` (None when it can run
on tensors of that device type, else the reason it cannot) and any of the op functions
of ``lowprec.backends.reference`` with the same signatures and the same named results
(``lowprec.copies``). Each backend's op functions come from one adapter: the reference
itself, the Triton backend ``lowprec.kernels.backend``, and for ``cpu`` and ``cuda``
``lowprec.backends.extension`` (the compiled extension's ops, one schema for both
devices). No backend module imports another (docs/architecture.md, the layer table).
Modules are imported lazily, so a missing Triton or a broken compiled extension never
breaks ``import lowprec``.

A backend may also define ``implementation(op, capability)``: the name of the code it runs
for ``op`` on a GPU of compute capability ``capability`` (``(major, minor)``; None for CPU
tensors), or None where it does not implement ``op`` there. Its op functions decide with
that same function, so the names ``lowprec info --dispatch`` prints are what runs.
A backend without it implements the ops it defines as ``"<backend>:<op>"``. A backend may
define ``function_for(op, capability)`` too: the function a ``KernelTable`` holds for
``op`` (default: the module's ``op``), for a backend whose op functions would otherwise
decide per call.

Kernel variants (``lowprec.kernels.variants``): where the committed winners file names a
variant other than the baseline for an op, backend, GPU capability and input dtype, the
function taken for ``backend="auto"`` (and by name) is resolved once to that variant, and
its implementation name carries a ``[variant <dtype>=<name>]`` suffix. Without winners
the functions are today's, unchanged.
"""

import importlib

import torch

BACKEND_MODULES = {
    "reference": "lowprec.backends.reference",
    "triton": "lowprec.kernels.backend",
    "cuda": "lowprec.backends.cuda",
    "cpu": "lowprec.backends.cpu",
}

# backend="auto": the first backend in this order that runs here and implements the op.
# CUDA tensors never fall back to the reference (FP32 math on CUDA cores, ~10x slower than
# the tensor-core path): a missing kernel is an error naming why, and the reference runs
# on a GPU only when asked for by name.
AUTO_ORDER = {
    "cuda": ("cuda", "triton"),
    "cpu": ("cpu", "reference"),
}

OPS = ("quantize_nvfp4", "quantize_row_col", "quantize_weight_2d", "dequantize_nvfp4",
       "quantize_fp8", "quantize_fp8_row_col", "nvfp4_gemm", "fp8_gemm")


def _load(name):
    """(module, None) or (None, reason)."""
    if name not in BACKEND_MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of "
                         f"{sorted(BACKEND_MODULES) + ['auto']}")
    try:
        return importlib.import_module(BACKEND_MODULES[name]), None
    except ModuleNotFoundError as err:
        if err.name == BACKEND_MODULES[name]:
            return None, f"the {name} backend is not part of this build of lowprec"
        if err.name == "triton":     # the triton backend's kernels, the cuda one's GEMM
            return None, f"triton is not installed ({err}); pip install triton"
        return None, f"the {name} backend cannot be imported: {err}"
    except Exception as err:  # a broken extension must be reported, not raised
        return None, f"the {name} backend failed to import: {type(err).__name__}: {err}"


def reason_unavailable(name, device_type="cpu"):
    """None if backend ``name`` can run on tensors of ``device_type``, else why not."""
    module, reason = _load(name)
    if module is None:
        return reason
    return module.availability(device_type)


def device_facts(device):
    """(device type, compute capability or None) of a torch.device or a device-type string."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return device.type, None
    return device.type, torch.cuda.get_device_capability(device)


def implementation(name, module, op, capability):
    """The name of what backend ``name`` runs for ``op`` at ``capability``, or None; with
    the winning variant's name when it is not the baseline (see ``with_variants``)."""
    namer = getattr(module, "implementation", None)
    if namer is not None:
        found = namer(op, capability)
    else:
        found = f"{name}:{op}" if hasattr(module, op) else None
    variants = _variants() if found is not None and capability is not None else None
    return found + variants.label(op, name, capability) if variants else found


def _variants():
    """``lowprec.kernels.variants``, or None in a build without the kernels package (or
    without Triton). Imported here, on first use, like the backends themselves."""
    try:
        from lowprec.kernels import variants
    except ImportError:
        return None
    return variants


def with_variants(name, op, capability, function):
    """``function`` (backend ``name``'s ``op``), or the entry running the winning variants
    at ``capability`` (resolved once; ValueError naming an unknown variant)."""
    variants = _variants() if capability is not None else None
    return variants.resolve(op, name, capability, function) if variants else function


def choose(op, device_type, capability, installed=False):
    """``(backend name, implementation name)`` that ``backend="auto"`` takes for ``op``.

    ``installed=True`` answers for a full install on a GPU of ``capability`` rather than
    for this machine: each backend counts as importable and built (the CUDA extension
    with its kernels, Triton present), and only ``implementation`` decides. Raises
    RuntimeError naming every backend's reason when none can run the op.
    """
    reasons = []
    for candidate in AUTO_ORDER.get(device_type, ("reference",)):
        module, reason = _load(candidate)
        if module is not None and not installed:
            reason = module.availability(device_type)
        name = None
        if module is not None and reason is None:
            name = implementation(candidate, module, op, capability)
            if name is None:
                where = "" if capability is None else f" on {capability[0]}.{capability[1]}"
                reason = f"it does not implement {op}{where}"
        if name is not None:
            return candidate, name
        reasons.append(f"{candidate}: {reason}")
    raise RuntimeError(f"no backend can run {op} on {device_type} tensors "
                       f"({'; '.join(reasons)}); pass backend='reference' to run the "
                       f"slow reference explicitly")


def get(name, op, device):
    """The function implementing ``op`` in backend ``name`` for tensors on ``device``.

    ``device``: a torch.device or a device type string. ``name="auto"`` picks by
    ``AUTO_ORDER`` (see ``choose``). Raises RuntimeError naming the reason when no
    backend can run the op here, or when an explicitly requested backend cannot.
    """
    device_type, capability = device_facts(device)
    if name == "auto":
        name, _ = choose(op, device_type, capability)
        return with_variants(name, op, capability, getattr(_load(name)[0], op))
    module, reason = _load(name)
    if module is not None:
        reason = module.availability(device_type)
    if reason is not None:
        raise RuntimeError(f"backend={name!r} cannot run on {device_type}: {reason}")
    if implementation(name, module, op, capability) is None:
        where = ("" if capability is None else
                 f" on compute capability {capability[0]}.{capability[1]}")
        raise NotImplementedError(f"backend={name!r} does not implement {op}{where}")
    return with_variants(name, op, capability, getattr(module, op))


class KernelTable:
    """The function ``backend="auto"`` runs for each op on tensors of one device.

    Resolved once per device (``kernel_table``) so that the training layer's hot path
    calls backend functions directly: no registry look-up, no capability query and no
    argument check per call (the layer's arguments are checked where it is built).
    ``names`` holds what ``lowprec info --dispatch`` prints for each op. An op no
    backend can run here is a function that raises the reason when called. Where the
    winners file (``lowprec.kernels.variants``) names a variant for this capability, the
    op's function is that variant's (or a per-dtype dict dispatch), resolved here once;
    an unknown variant name there is a ValueError naming it.
    """

    def __init__(self, device, installed=False, capability=None):
        """``installed`` and ``capability``: a table for a GPU of that capability with
        every backend installed (see ``choose``), for tracing the CUDA path without one."""
        device_type, here = device_facts(device)
        capability = capability or here
        self.names = {}
        for op in OPS:
            try:
                name, self.names[op] = choose(op, device_type, capability, installed)
                module = _load(name)[0]
                function_for = getattr(module, "function_for", None)
                function = (function_for(op, capability) if function_for
                            else getattr(module, op))
                setattr(self, op, with_variants(name, op, capability, function))
            except RuntimeError as err:
                self.names[op] = f"none ({err})"
                setattr(self, op, _raiser(err))
        self._values_mode(device_type, capability, installed)

    def _values_mode(self, device_type, capability, installed):
        """``nvfp4_values``: whether the NVFP4 GEMM here multiplies bf16 values (Hopper's
        emulation: dequantize, mm, epilogue) and the quantizers can write them directly
        (values mode), so the layer asks for values and skips the dequantize launches.
        Then ``nvfp4_gemm_values`` and ``dequantize_values`` (for a packed operand, e.g.
        the saved X^T) are the GEMM's two halves, the first from the quantizers' backend
        where it has its own (``own_values_gemm``)."""
        self.nvfp4_values = False
        try:
            gemm_backend, _ = choose("nvfp4_gemm", device_type, capability, installed)
            quantizers = {choose(op, device_type, capability, installed)[0]
                          for op in ("quantize_row_col", "quantize_weight_2d")}
        except RuntimeError:
            return
        values_gemm = getattr(_load(gemm_backend)[0], "values_gemm", None)
        halves = values_gemm(capability) if values_gemm else None
        if halves is None or not all(getattr(_load(name)[0], "QUANTIZE_VALUES", False)
                                     for name in quantizers):
            return
        self.nvfp4_gemm_values, self.dequantize_values = halves
        self.nvfp4_values = True
        # The quantizers' backend may multiply its own values (the cuda backend's cuBLASLt
        # GEMM where lowprec.backends.cuda.VALUES_GEMM picks it): (function, name) or None.
        own_gemm = (getattr(_load(next(iter(quantizers)))[0], "own_values_gemm", None)
                    if len(quantizers) == 1 else None)
        own = own_gemm(capability, installed) if own_gemm else None
        if own is not None:
            self.nvfp4_gemm_values, self.names["nvfp4_gemm"] = own
        self.names["nvfp4_gemm"] += " (operands: the quantizers' bf16 values)"


def _raiser(err):
    def unavailable(*args, **kwargs):
        raise RuntimeError(str(err))
    return unavailable


_TABLES = {}
_KEY_STEPS = {}


def device_key_step(device):
    """The function that advances a device SR key on a GPU (``lowprec.sr_keys`` device
    keys): the Triton backend's one-launch kernel, ``next_device_sr_key(counts,
    stream_base, recomputed)``. Resolved once per device; RuntimeError naming why where
    Triton cannot run it."""
    step = _KEY_STEPS.get(device)
    if step is None:
        module, reason = _load("triton")
        if module is not None:
            reason = module.availability(torch.device(device).type)
        if reason is not None:
            raise RuntimeError(f"device SR keys on {device} need the Triton backend: {reason}")
        step = _KEY_STEPS[device] = module.next_device_sr_key
    return step


def kernel_table(device):
    """The ``KernelTable`` of ``device`` (a torch.device), made on first use."""
    table = _TABLES.get(device)
    if table is None:
        table = _TABLES[device] = KernelTable(device)
    return table
