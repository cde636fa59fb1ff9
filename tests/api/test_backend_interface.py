"""The backend interface of docs/architecture.md, one test per rule: every backend's op
functions come from its one adapter, only the adapters call the ops, each op is defined
once per concern, one vocabulary, and every backend returns the named results with the
shapes ``lowprec.shapes`` promises the fake kernels.

Mutations tried: ``quantize_row_col = extension.quantize_row_col`` in
``lowprec/backends/cuda.py`` replaced by a ``def`` wrapping it makes
``test_each_backend_takes_its_ops_from_its_adapter`` and
``test_each_op_is_defined_once_per_concern`` fail; a ``torch.ops.lowprec_C`` call added to
``lowprec/_C.py`` makes ``test_only_the_adapters_call_the_ops`` fail; renaming the
launcher's ``rht_signs`` back to ``col_signs`` makes ``test_one_vocabulary`` fail.
"""

import ast
from pathlib import Path

import pytest
import torch

from lowprec import backends, shapes
from lowprec import reference as R
from lowprec.copies import FP8Copy, FP8RowCol, NVFP4Copy, RowCol

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "lowprec").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))

# Backend -> the modules its op functions may come from: its adapter, and its own module
# for what it composes from the adapter's functions (cpu: dequantize = block dequantize
# + the reference's global scale; quantize_fp8_row_col = two rowwise casts; reference:
# quantize_row_col reading a device SR key, which the spec takes as an int).
ADAPTERS = {
    "reference": {"lowprec.reference", "lowprec.backends.reference"},
    "triton": {"lowprec.kernels.backend"},
    "cpu": {"lowprec.backends.extension", "lowprec.backends.cpu", "lowprec.reference"},
    "cuda": {"lowprec.backends.extension", "lowprec.backends.cuda"},
}
# Who may call which ops: the adapter of each implementation only.
OP_CALLERS = {"torch.ops.lowprec_C": "lowprec/backends/extension.py",
              "torch.ops.lowprec.triton_": "kernels/backend.py"}
# Each quantize op is defined once per concern: the public call (ops.py), the spec
# (reference.py), the extension's adapter, the Triton adapter and, where it has one under
# the op's own name, the Triton launcher; quantize_row_col also in the reference
# backend, which reads a key given in memory (device SR keys) before calling the spec.
DEFINED_IN = {
    "quantize_row_col": {"lowprec/ops.py", "lowprec/reference.py",
                         "lowprec/backends/extension.py", "kernels/backend.py",
                         "kernels/quantize_row_col.py", "lowprec/backends/reference.py"},
    "quantize_nvfp4": {"lowprec/ops.py", "lowprec/reference.py",
                       "lowprec/backends/extension.py", "kernels/backend.py"},
    "quantize_weight_2d": {"lowprec/ops.py", "lowprec/reference.py",
                           "lowprec/backends/extension.py", "kernels/backend.py"},
}
# The other vocabulary, which no function of the package takes any more.
RETIRED_ARGUMENTS = {"row", "col", "col_signs"}


def _trees():
    for path in SOURCES:
        yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


@pytest.mark.parametrize("name", sorted(backends.BACKEND_MODULES))
def test_each_backend_takes_its_ops_from_its_adapter(name):
    module, reason = backends._load(name)
    if module is None:
        pytest.skip(reason)
    origins = {op: getattr(module, op).__module__ for op in backends.OPS
               if hasattr(module, op)}
    assert origins, name
    stray = {op: where for op, where in origins.items() if where not in ADAPTERS[name]}
    assert not stray, f"{name}: op functions defined outside its adapter: {stray}"


def test_only_the_adapters_call_the_ops():
    bad = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                dotted = _dotted(node)
                for prefix, owner in OP_CALLERS.items():
                    if dotted.startswith(prefix) and path != owner:
                        bad.append(f"{path}: {dotted}")
    assert not bad, bad


def test_each_op_is_defined_once_per_concern():
    found = {op: [] for op in DEFINED_IN}
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in found:
                found[node.name].append(path)
    for op, paths in found.items():
        assert sorted(paths) == sorted(DEFINED_IN[op]), (op, paths)


def test_one_vocabulary():
    """rowwise / columnwise / rht_signs everywhere: no quantize function takes ``row``,
    ``col`` or ``col_signs`` and no call of one passes them (``row`` elsewhere, e.g. a
    table's row, is another word)."""
    bad = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and "quantize" in node.name:
                arguments = node.args.args + node.args.kwonlyargs
                bad += [f"{path}: {node.name}({a.arg})" for a in arguments
                        if a.arg in RETIRED_ARGUMENTS]
            elif isinstance(node, ast.Call) and "quantize" in _dotted(node.func):
                bad += [f"{path}: {_dotted(node.func)}({k.arg}=)" for k in node.keywords
                        if k.arg in RETIRED_ARGUMENTS]
    assert not bad, bad


def _specs(tensors):
    return tuple((tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in tensors)


def _usable(name):
    reason = backends.reason_unavailable(name, "cpu")
    if reason is not None:
        pytest.skip(reason)
    return backends._load(name)[0]


@pytest.mark.parametrize("name", ["reference", "cpu", "triton"])
def test_every_backend_returns_named_results(name):
    """The named results, with the shapes and dtypes ``lowprec.shapes`` gives the fakes."""
    module = _usable(name)
    x = torch.randn(20, 32, dtype=torch.bfloat16)
    copies = module.quantize_row_col(x, rht_signs=R.DEFAULT_SIGN_VECTOR, col_values=True)
    assert isinstance(copies, RowCol) and isinstance(copies.rowwise, NVFP4Copy)
    assert isinstance(copies.columnwise, NVFP4Copy)
    assert _specs(copies.rowwise + copies.columnwise) == shapes.row_col(20, 32, True, True,
                                                                        col_values=True)
    rowwise_only = module.quantize_row_col(x, columnwise=False)
    assert rowwise_only.columnwise is None and isinstance(rowwise_only.rowwise, NVFP4Copy)
    w = torch.randn(32, 48)
    weight = module.quantize_weight_2d(w)
    assert isinstance(weight, RowCol)
    assert _specs(weight.rowwise + weight.columnwise) == shapes.weight_2d(32, 48, True)
    single = module.quantize_nvfp4(x)
    assert isinstance(single, NVFP4Copy) and _specs(single) == shapes.nvfp4((20,), 32)
    fp8 = module.quantize_fp8(x)
    assert isinstance(fp8, FP8Copy) and _specs(fp8) == shapes.fp8((20,), 32)
    both = module.quantize_fp8_row_col(x)
    assert isinstance(both, FP8RowCol) and _specs(both) == shapes.fp8_row_col(20, 32)
