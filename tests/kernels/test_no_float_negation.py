"""No unary minus on a value inside a Triton kernel.

Compiled Triton lowers ``-x`` to ``0 - x``, which gives +0.0 for -0.0 (and so does its
interpreter up to 3.6; 3.9's interpreter negates, so the bit-exact tests pass there and
failed only on an H200). NVFP4 and E4M3 keep the sign of zero, so kernels set signs with
bit operations (``nvfp4_math.with_sign_of``). Negative literals (``-448.0``) are fine.
"""

import ast
import pathlib

KERNELS = pathlib.Path(__file__).resolve().parents[2] / "kernels"


def _is_jit(decorator):
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "jit"


def negations(source):
    """(function, line) of every ``-expr`` on a non-literal inside @triton.jit functions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and any(map(_is_jit, node.decorator_list)):
            for inner in ast.walk(node):
                if (isinstance(inner, ast.UnaryOp) and isinstance(inner.op, ast.USub)
                        and not isinstance(inner.operand, ast.Constant)):
                    found.append((node.name, inner.lineno))
    return found


def test_the_check_sees_a_negation():
    source = "import triton\n@triton.jit\ndef f(x):\n    return tl.where(x < 0, -x, x) + -1.0\n"
    assert negations(source) == [("f", 4)]


def test_no_kernel_negates_a_value():
    found = {path.name: negations(path.read_text()) for path in sorted(KERNELS.glob("*.py"))}
    assert not {name: hits for name, hits in found.items() if hits}
