"""The dispatch table: which implementation ``backend="auto"`` runs for each op.

For this machine (CUDA tensors when a GPU is visible, else CPU tensors), or for a GPU of a
given compute capability with lowprec fully installed (CUDA extension built, Triton
present), so that what a Hopper or Blackwell GPU would run can be read, and tested,
without one. The names are those of the ``KernelTable`` the training layer resolves, from the
backends' own ``implementation`` functions, which their op functions dispatch on, e.g.
``cuda:quantize_row_col``, ``dequant+torch.mm``, ``torch:_scaled_mm``.
"""

import json
import sys

import torch

from lowprec import backends


def parse_capability(text):
    """``"9.0"`` -> ``(9, 0)``; ValueError naming the text otherwise."""
    major, dot, minor = str(text).partition(".")
    if not (major.isdigit() and (not dot or minor.isdigit())):
        raise ValueError(f"--capability must look like 9.0 or 10.0; got {text!r}")
    return int(major), int(minor or 0)


def table(capability=None):
    """``(device description, {op: implementation})``.

    ``capability``: ``(major, minor)`` of a hypothetical GPU, or None for this machine. An
    op that no backend can run maps to ``"none (<reasons>)"``.
    """
    if capability is None:
        device_type, capability = backends.device_facts(
            "cuda" if torch.cuda.is_available() else "cpu")
        installed = False
        where = (f"CUDA tensors on this GPU (compute capability {capability[0]}."
                 f"{capability[1]})" if capability else "CPU tensors on this machine")
    else:
        device_type, installed = "cuda", True
        where = (f"CUDA tensors on a compute capability {capability[0]}.{capability[1]} GPU, "
                 f"lowprec fully installed (CUDA extension built, Triton present)")
    # The kernel table the training layer resolves (its names: what each op runs, with
    # the winning variant and, on Hopper, that the NVFP4 GEMM takes the quantizers' values).
    kernels = backends.KernelTable(torch.device(device_type), installed=installed,
                                   capability=capability)
    return where, dict(kernels.names)


def format_table(where, ops):
    width = max(len(op) for op in ops)
    lines = [f"dispatch for {where} (backend='auto'):"]
    lines += [f"  {op:<{width}}  {name}" for op, name in ops.items()]
    return "\n".join(lines)


def main(capability_text=None, as_json=False):
    """``lowprec info --dispatch``: print the table; 2 and a one-line message on bad input."""
    try:
        capability = None if capability_text is None else parse_capability(capability_text)
    except ValueError as err:
        print(f"lowprec info: error: {err}", file=sys.stderr)
        return 2
    where, ops = table(capability)
    print(json.dumps(ops, indent=2) if as_json else format_table(where, ops))
    return 0
