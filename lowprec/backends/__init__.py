"""Backend registry: which implementations exist, which can run here, and why not.

A backend is a module that defines ``availability(device_type)`` (None when it can run
on tensors of that device type, else the reason it cannot) and any of the op functions
of ``lowprec.backends.reference`` with the same signatures. Modules are imported lazily,
so a missing Triton or a broken compiled extension never breaks ``import lowprec``.
"""

import importlib

BACKEND_MODULES = {
    "reference": "lowprec.backends.reference",
    "triton": "lowprec.kernels.backend",
    "cuda": "lowprec.backends.cuda",
    "cpu": "lowprec.backends.cpu",
}

# backend="auto": the first backend in this order that runs here and implements the op.
AUTO_ORDER = {
    "cuda": ("cuda", "triton", "reference"),
    "cpu": ("cpu", "reference"),
}

OPS = ("quantize_nvfp4", "dequantize_nvfp4", "quantize_fp8", "nvfp4_gemm", "fp8_gemm")


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
        return None, f"the {name} backend cannot be imported: {err}"
    except Exception as err:  # a broken extension must be reported, not raised
        return None, f"the {name} backend failed to import: {type(err).__name__}: {err}"


def reason_unavailable(name, device_type="cpu"):
    """None if backend ``name`` can run on tensors of ``device_type``, else why not."""
    module, reason = _load(name)
    if module is None:
        return reason
    return module.availability(device_type)


def get(name, op, device_type):
    """The function implementing ``op`` in backend ``name`` for ``device_type``.

    ``name="auto"`` picks by ``AUTO_ORDER``. Raises RuntimeError naming the reason when
    an explicitly requested backend cannot run the op here.
    """
    if name == "auto":
        for candidate in AUTO_ORDER.get(device_type, ("reference",)):
            module, _ = _load(candidate)
            if (module is not None and module.availability(device_type) is None
                    and hasattr(module, op)):
                return getattr(module, op)
        raise RuntimeError(f"no backend implements {op} on {device_type}")
    module, reason = _load(name)
    if module is not None:
        reason = module.availability(device_type)
    if reason is not None:
        raise RuntimeError(f"backend={name!r} cannot run on {device_type}: {reason}")
    if not hasattr(module, op):
        raise NotImplementedError(f"backend={name!r} does not implement {op}")
    return getattr(module, op)
