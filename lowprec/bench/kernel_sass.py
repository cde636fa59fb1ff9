"""SASS instructions per element of the quantize kernels, and the H200 bounds they give.

Offline, no GPU: the CUDA kernels of csrc/quantize.cu are built for sm_90a with nvcc and
the flags of csrc/nvcc_flags.txt, the Triton kernels are compiled for sm_90 with the
ptxas Triton ships (as kernels/aot.py does), and both are disassembled with
``cuobjdump -sass``. The figures of bench/KERNELS.md come from this script.

    python -m lowprec.bench.kernel_sass                 # the table
    python -m lowprec.bench.kernel_sass --json          # the same as JSON
    python -m lowprec.bench.kernel_sass --only cuda     # or: --only triton

Exits 0 with a message (and no table for that half) where nvcc, cuobjdump or Triton's
compiler is missing. Run it without ``TRITON_INTERPRET=1``.

How instructions are attributed to elements (SASS counted per thread):
* The control-flow graph of each function is rebuilt from the SASS (branch targets,
  EXIT, CALL). A block that CALLs a subroutine is cold: that is the slow path of the
  IEEE division (``FCHK`` fails only for denormal/huge operands); the subroutine itself
  is not counted either.
* CUDA kernels loop over the work (grid-stride). The count is the longest path through
  the loop body, from the loop head to the backward branch, without cold blocks: the
  most instructions one iteration can issue on the hot path (data-dependent side paths,
  e.g. E4M3 subnormals, are included when they are longer). It is divided by the
  elements one thread handles per iteration (1x16: 16; fused row/col: a 64x64 tile over
  256 threads = 16; 16x16: 2 blocks = 32). The prologue (amax read, tensor scales) runs
  once per thread and is left out (reported as ``prologue``).
* The CUDA kernels decide RNE/SR, RHT on/off, which copies, at run time, so the shipped
  loop body holds every path. To count one path the script compiles a copy of
  quantize.cu in a temporary folder in which those run-time flags are replaced by
  constants (``a.rounding.stochastic`` -> SR, ``a.rht_mask >= 0`` -> RHT, ``a.rowwise``,
  ``a.columnwise`` and ``a.col.data != nullptr`` -> true); the kernel code itself is
  unchanged. ``static`` is the whole loop body of the shipped (unspecialised) kernel.
* Triton kernels: one program per tile. Loop-free kernels: the longest hot path from
  entry to EXIT (prologue included, as every program pays it) over elements per thread
  (tile / (32 * num_warps)). Kernels with loops (the FP8 quantize walks K twice): the sum
  over top-level loops of the longest hot path of one iteration over the elements a
  thread handles per iteration; the code outside the loops is left out.

Triton rows also cover the values-mode instances (ROW_VALUES / COL_VALUES, VALUES) and
the FP8 two-layout cast's kernels (``_column_scale_kernel``,
``_quantize_fp8_row_col_kernel``) at today's launch and at each FP8 variant's
(kernels/variants.py); ``regs`` is ``cuobjdump -res-usage``'s REG.

Bounds (H200): memory, 3.4e12 B/s over the fewest bytes per element; issue, 132 SMs x 4
schedulers x 1.98e9 warp-instructions/s x 32 threads over instructions per element.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# The source checkout this module sits in (lowprec/bench/ of it): the CUDA sources of
# csrc/ and the measured records of bench/results/ are not part of the wheel.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COPY_BPS = 3.4e12                         # H200 device copy (~3.4 TB/s; run1 copies: 2.1-3.6)
ISSUE_PER_S = 132 * 4 * 1.98e9 * 32       # thread-instructions per second
MEASURED = os.path.join(ROOT, "bench", "results", "NVIDIA_H200-20261127", "run1")

# ---------------------------------------------------------------------------------
# SASS parsing and the control-flow graph
# ---------------------------------------------------------------------------------

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_PRED = re.compile(r"^@!?U?P[T0-9]+\s+")


def parse_sass(text):
    """{function name: [(addr, guarded, opcode, text)]} of a ``cuobjdump -sass`` dump."""
    functions, current = {}, None
    for line in text.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = functions.setdefault(m.group(1), [])
            continue
        m = _INSN.search(line)
        if m and current is not None:
            body = m.group(2)
            guarded = bool(_PRED.match(body))
            body = _PRED.sub("", body)
            current.append((int(m.group(1), 16), guarded, body.split()[0], body))
    return functions


def _target(body):
    m = re.search(r"0x([0-9a-f]+)\s*$", body)
    return int(m.group(1), 16) if m else None


class Cfg:
    """Basic blocks of one function's SASS (NOPs dropped)."""

    def __init__(self, insns):
        self.insns = [i for i in insns if i[2] != "NOP"]
        addrs = [i[0] for i in self.insns]
        self.index = {a: n for n, a in enumerate(addrs)}
        leaders = {addrs[0]}
        for n, (a, guarded, op, body) in enumerate(self.insns):
            if op.startswith("BRA") or op in ("EXIT", "RET") or op.startswith("RET"):
                t = _target(body) if op.startswith("BRA") else None
                if t is not None:
                    leaders.add(t)
                if n + 1 < len(self.insns):
                    leaders.add(self.insns[n + 1][0])
        starts = sorted(a for a in leaders if a in self.index)
        self.blocks = []                      # (start, end index exclusive)
        for s, nxt in zip(starts, starts[1:] + [None]):
            lo, hi = self.index[s], (self.index[nxt] if nxt is not None else len(self.insns))
            self.blocks.append((lo, hi))
        self.block_of = {self.insns[lo][0]: b for b, (lo, hi) in enumerate(self.blocks)}

    def size(self, b):
        lo, hi = self.blocks[b]
        return hi - lo

    def cold(self, b):
        lo, hi = self.blocks[b]
        return any(op.startswith("CALL") for _, _, op, _ in self.insns[lo:hi])

    def succ(self, b):
        lo, hi = self.blocks[b]
        a, guarded, op, body = self.insns[hi - 1]
        out = []
        if op.startswith("BRA.DIV"):
            # Taken only when the warp is diverged (the fallback of a shuffle or
            # warp-sync): the hot path falls through.
            if b + 1 < len(self.blocks):
                out.append(b + 1)
        elif op.startswith("BRA"):
            t = _target(body)
            if t in self.block_of:
                out.append(self.block_of[t])
            if guarded and b + 1 < len(self.blocks):
                out.append(b + 1)
        elif op == "EXIT" or op.startswith("RET"):
            if guarded and b + 1 < len(self.blocks):
                out.append(b + 1)
        elif b + 1 < len(self.blocks):
            out.append(b + 1)
        return out

    def reachable(self):
        """Blocks reachable from the entry (BRA.DIV fallbacks are not)."""
        seen, todo = {0}, [0]
        while todo:
            for s in self.succ(todo.pop()):
                if s not in seen:
                    seen.add(s)
                    todo.append(s)
        return seen

    def back_edges(self):
        """(head block, latch block) of each backward branch reachable from the entry."""
        edges = []
        for b in sorted(self.reachable()):
            for s in self.succ(b):
                if s < b or (s == b and self.size(b) > 1):
                    edges.append((s, b))
        return edges

    def top_loops(self):
        """Outermost loops: back edges whose span no other back edge contains."""
        edges = self.back_edges()
        return [(h, l) for h, l in edges
                if not any((h2 <= h and l <= l2) and (h2, l2) != (h, l) for h2, l2 in edges)]

    def longest(self, first, last, stop_at_exit=False, pick=max):
        """Most instructions on a hot path from block `first` to block `last` (or to an
        EXIT when stop_at_exit), forward edges only, cold blocks excluded; with
        ``pick=min``, the fewest."""
        best = {first: self.size(first)}
        result = None
        for b in range(first, (last if last is not None else len(self.blocks) - 1) + 1):
            if b not in best or self.cold(b):
                continue
            lo, hi = self.blocks[b]
            a, guarded, op, _ = self.insns[hi - 1]
            if b == last or (stop_at_exit and op == "EXIT"):
                result = best[b] if result is None else pick(result, best[b])
            for s in self.succ(b):
                if s > b and (last is None or s <= last) and not self.cold(s):
                    n = best[b] + self.size(s)
                    best[s] = n if s not in best else pick(best[s], n)
        return result or 0

    def shortest(self, first, last, stop_at_exit=False):
        return self.longest(first, last, stop_at_exit, pick=min)

    def static(self, first, last):
        return sum(self.size(b) for b in range(first, last + 1))


def loop_facts(insns):
    """Loop-body counts of a grid-stride kernel: the largest top-level loop."""
    cfg = Cfg(insns)
    loops = cfg.top_loops()
    if not loops:
        return None
    head, latch = max(loops, key=lambda hl: cfg.static(*hl))
    return dict(path=cfg.longest(head, latch), min_path=cfg.shortest(head, latch),
                static=cfg.static(head, latch),
                prologue=cfg.longest(0, head) - cfg.size(head), loops=len(loops),
                total=len(cfg.insns))


def program_facts(insns):
    """Per-program counts of a Triton kernel: loop-free -> entry to EXIT; with loops ->
    the sum of one iteration of each top-level loop (outside code in `outside`)."""
    cfg = Cfg(insns)
    loops = cfg.top_loops()
    if not loops:
        return dict(path=cfg.longest(0, None, stop_at_exit=True),
                    min_path=cfg.shortest(0, None, stop_at_exit=True), loops=0,
                    total=len(cfg.insns))
    per_iter = sum(cfg.longest(h, l) for h, l in loops)
    return dict(path=per_iter, min_path=sum(cfg.shortest(h, l) for h, l in loops),
                loops=len(loops), total=len(cfg.insns),
                static=sum(cfg.static(h, l) for h, l in loops))


# ---------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------

# Kernel (bf16 input: InputType 1) -> name pattern, elements per thread per loop iteration.
CUDA_KERNELS = {
    "rows_1x16": (r"rows_1x16_kernelILNS0_9InputTypeE1ELb0E", 16),
    "rows_1x16 amax": (r"rows_1x16_kernelILNS0_9InputTypeE1ELb1E", 16),
    "rows_16x16": (r"rows_16x16_kernelILNS0_9InputTypeE1E", 32),
    "row_col": (r"quantize_row_col_kernelILNS0_9InputTypeE1ELb0E", 16),
    "row_col amax": (r"quantize_row_col_kernelILNS0_9InputTypeE1ELb1E", 16),
}
# Row label -> (kernel, SR, RHT); what each library op runs (bf16 input).
CUDA_ROWS = [
    ("rowwise 1x16 RNE (quantize_nvfp4)", "rows_1x16", 0, 0),
    ("rowwise 1x16 SR", "rows_1x16", 1, 0),
    ("quantize_row_col RNE, RHT on col", "row_col", 0, 1),
    ("quantize_row_col SR, RHT on col", "row_col", 1, 1),
    ("quantize_weight_2d (W and W^T)", "rows_16x16", 0, 0),
    ("amax (launch_amax, no RHT)", "rows_1x16 amax", 0, 0),
    ("amax (launch_amax, RHT)", "rows_1x16 amax", 0, 1),
    ("amax row+col (RHT on col)", "row_col amax", 0, 1),
]
SPECIALISE = [
    (r"a\.(?:row_|col_)?rounding\.stochastic", "(LP_SR != 0)"),
    (r"a\.rht_mask >= 0", "(LP_RHT != 0)"),
    (r"a\.rowwise\b", "true"),
    (r"a\.columnwise\b", "true"),
    (r"a\.col\.data != nullptr", "true"),
]


def nvcc_flags():
    with open(os.path.join(ROOT, "csrc", "nvcc_flags.txt")) as f:
        flags = [line.split("#")[0].strip() for line in f]
    # Only the sm_90a machine code: the other targets do not change the sm_90a SASS.
    return [fl for fl in flags if fl and not fl.startswith("-gencode")] + [
        "-gencode=arch=compute_90a,code=sm_90a"]


def cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.join(os.path.dirname(os.path.realpath(nvcc)), "cuobjdump")
        if os.path.exists(real):
            return real
    try:
        import triton
        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                            "cuobjdump")
        return path if os.path.exists(path) else None
    except Exception:
        return None


def build_cuda(src_dir, tmp, tag, defines):
    cubin = os.path.join(tmp, f"quantize_{tag}.cubin")
    cmd = (["nvcc", *nvcc_flags(), "-cubin", f"-I{os.path.join(ROOT, 'csrc')}",
            *[f"-D{d}" for d in defines], "-o", cubin, os.path.join(src_dir, "quantize.cu")])
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    sass = subprocess.run([cuobjdump(), "-sass", cubin], check=True, capture_output=True,
                          text=True).stdout
    return parse_sass(sass)


def _spills(insns):
    """Local-memory traffic (spills, or an array moved to local memory) in the SASS."""
    return any(op.split(".")[0] in ("LDL", "STL") for _, _, op, _ in insns)


def _find(functions, pattern):
    names = [n for n in functions if re.search(pattern, n)]
    if len(names) != 1:
        raise RuntimeError(f"{pattern}: {len(names)} functions match")
    return functions[names[0]]


def cuda_table():
    if shutil.which("nvcc") is None or cuobjdump() is None:
        print("kernel_sass: nvcc or cuobjdump not found: CUDA counts skipped")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        shipped = build_cuda(os.path.join(ROOT, "csrc"), tmp, "shipped", [])
        with open(os.path.join(ROOT, "csrc", "quantize.cu")) as f:
            src = f.read()
        for pattern, repl in SPECIALISE:
            src, n = re.subn(pattern, repl, src)
            if n == 0:
                raise RuntimeError(f"specialisation {pattern!r} matched nothing in quantize.cu")
        spec_dir = os.path.join(tmp, "spec")
        os.makedirs(spec_dir)
        with open(os.path.join(spec_dir, "quantize.cu"), "w") as f:
            f.write(src)
        builds = {}
        for sr, rht in sorted({(r[2], r[3]) for r in CUDA_ROWS}):
            builds[(sr, rht)] = build_cuda(spec_dir, tmp, f"sr{sr}_rht{rht}",
                                           [f"LP_SR={sr}", f"LP_RHT={rht}"])
    rows = []
    for label, kernel, sr, rht in CUDA_ROWS:
        pattern, per_thread = CUDA_KERNELS[kernel]
        spec = loop_facts(_find(builds[(sr, rht)], pattern))
        ship = loop_facts(_find(shipped, pattern))
        rows.append(dict(backend="cuda", kernel=label, path=spec["path"], min_path=spec["min_path"],
                         per_thread=per_thread, per_elem=spec["path"] / per_thread,
                         prologue=spec["prologue"], static_shipped=ship["static"],
                         spilled=_spills(_find(shipped, pattern))))
    return rows


# ---------------------------------------------------------------------------------
# Triton
# ---------------------------------------------------------------------------------

def triton_specs():
    """label -> (kernel, signature, constexprs, num_warps, num_stages, elements per thread
    per program (loop-free) or per loop iteration)."""
    from lowprec.kernels import aot
    from lowprec.kernels.fp8 import _scale_epilogue_kernel
    from lowprec.kernels.dequantize import _dequantize_kernel
    specs = aot._specs()
    deq = specs["dequantize"]
    fp8 = specs["quantize_fp8"]
    return {
        "quantize_row_col row RNE (rowwise)": specs["quantize_row_col row RNE"],
        "quantize_row_col row SR": specs["quantize_row_col row SR"],
        "quantize_row_col row+col RHT RNE": specs["quantize_row_col row+col RHT RNE"],
        "quantize_row_col row+col RHT SR": specs["quantize_row_col row+col RHT SR"],
        "quantize_2d row+col RNE": specs["quantize_2d row+col"],
        "amax row+col RHT": specs["amax row+col RHT"],
        # Hopper's GEMM path dequantizes without the global scale, to bf16.
        "dequantize (bf16, no global)": (
            _dequantize_kernel, deq[1], dict(deq[2], APPLY_GLOBAL=False), 4, 1, 16 * 256 // 128),
        # BLOCK_R x BLOCK_K = 4 x 512 per loop iteration over 128 threads.
        "quantize_fp8 (2 passes over K)": (fp8[0], fp8[1], fp8[2], 4, 1, 4 * 512 // 128),
        "_scale_epilogue_kernel (bf16 out, bias)": (
            _scale_epilogue_kernel,
            dict(acc_ptr="*fp32", a_scale_ptr="*fp32", b_scale_ptr="*fp32", bias_ptr="*i16",
                 out_ptr="*i16", M="i32", N="i32", stride_acc="i32"),
            dict(HAS_BIAS=True, BIAS_KIND=1, OUT_KIND=1, BLOCK_M=16, BLOCK_N=256), 4, 1,
            16 * 256 // 128),
        **values_specs(specs),
        **fp8_specs(),
    }


def values_specs(specs):
    """Values mode (issue 20): the quantizers writing bf16 block-dequantized values
    instead of codes and scales (constexprs ROW_VALUES / COL_VALUES, VALUES)."""
    row = specs["quantize_row_col row RNE"]
    both = specs["quantize_row_col row+col RHT RNE"]
    two_d = specs["quantize_2d row+col"]
    return {
        "quantize_row_col row RNE, values": (
            row[0], row[1], dict(row[2], ROW_VALUES=True), *row[3:]),
        "quantize_row_col row+col RHT RNE, values": (
            both[0], both[1], dict(both[2], ROW_VALUES=True, COL_VALUES=True), *both[3:]),
        # values=True needs columnwise=False: W's values only (W^T is their .t()).
        "quantize_2d row RNE, values": (
            two_d[0], two_d[1], dict(two_d[2], COL=False, VALUES=True), *two_d[3:]),
    }


def fp8_specs():
    """The FP8 two-layout cast's kernels at today's GPU launch (kernels/fp8.py's
    row_col_blocks), quantize_fp8 at its launch (num_stages: Triton's default, as
    launched), then every FP8 variant's changed kernels (kernels/variants.py). Elements
    per thread: per loop step (both kernels loop; the code outside the loops is left
    out, as for quantize_fp8)."""
    from lowprec.kernels import variants as V
    out = {}
    for label, spec in V._fp8_aot_specs().items():
        kernel, variant = label.split(" / ")
        launch = V.FP8_BASE[kernel] if variant == V.BASELINE else None
        if launch is None:
            launch = V.FP8_LAUNCHES.get(variant) or getattr(
                V.FP8_ROW_COL_LAUNCHES[variant], "column" if kernel == V.FP8_COLUMN else "fused")
        tile = f"{launch.block_r}x{launch.block_k} w{launch.num_warps}"
        name = kernel if variant == V.BASELINE else f"{kernel} {variant}"
        out[f"{name} ({tile})"] = spec
    return out


def _registers(tool, cubin):
    """(registers, local + stack bytes) of the one kernel in ``cubin``."""
    text = subprocess.run([tool, "-res-usage", cubin], check=True, capture_output=True,
                          text=True).stdout
    usage = {k: int(v) for k, v in re.findall(r"(REG|STACK|LOCAL):(\d+)", text)}
    return usage.get("REG"), usage.get("LOCAL", 0) + usage.get("STACK", 0)


def triton_table():
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("kernel_sass: TRITON_INTERPRET=1: Triton counts skipped (unset it)")
        return []
    try:
        import triton  # noqa: F401
        from lowprec.kernels import aot
        specs = triton_specs()
        tool = cuobjdump()
        if tool is None:
            raise RuntimeError("no cuobjdump")
    except Exception as err:
        print(f"kernel_sass: Triton's compiler unavailable ({type(err).__name__}: {err}): "
              "Triton counts skipped")
        return []
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (fn, sig, consts, warps, stages, per_thread) in specs.items():
            # stride_acc hinted too: the runtime specialises on it (N = 4096 in the Linear).
            compiled = aot.compile_for_hopper(fn, sig, consts, warps, stages,
                                              aligned_ints={"stride_acc"})
            cubin = os.path.join(tmp, "k.cubin")
            with open(cubin, "wb") as f:
                f.write(compiled.asm["cubin"])
            sass = subprocess.run([tool, "-sass", cubin], check=True, capture_output=True,
                                  text=True).stdout
            (insns,) = parse_sass(sass).values()
            facts = program_facts(insns)
            regs, local = _registers(tool, cubin)
            rows.append(dict(backend="triton", kernel=label, path=facts["path"],
                             min_path=facts["min_path"],
                             per_thread=per_thread, per_elem=facts["path"] / per_thread,
                             loops=facts["loops"], spilled=_spills(insns) or local > 0,
                             regs=regs, warps=warps))
    return rows


# ---------------------------------------------------------------------------------
# Bytes, bounds, measured figures
# ---------------------------------------------------------------------------------

NVFP4 = 0.5 + 1 / 16          # codes + one E4M3 scale per 16 elements
# kernel label prefix -> (fewest bytes per element, formula)
BYTES = [
    # Values mode first (their labels extend the packed ones').
    ("quantize_row_col row RNE, values", 4.0, "bf16 in 2 + bf16 values out 2"),
    ("quantize_row_col row+col RHT RNE, values", 6.0, "bf16 in 2 + 2 x bf16 values out 2"),
    ("quantize_2d row RNE, values", 4.0, "bf16 in 2 + bf16 values out 2"),
    ("fp8 _column_scale_kernel", 2.0, "bf16 in 2 (+ 4/M scale)"),
    ("fp8 _quantize_fp8_row_col_kernel", 4.0,
     "bf16 in 2 + 2 x e4m3 out 1 (+ 4/K + 4/M scales; 4/K read)"),
    ("fp8 _quantize_fp8_kernel", 3.0, "bf16 in 2 + e4m3 out 1 (+ 4/K scale)"),
    ("rowwise", 2 + NVFP4, "bf16 in 2 + codes 0.5 + scales 1/16"),
    ("quantize_row_col row RNE", 2 + NVFP4, "bf16 in 2 + codes 0.5 + scales 1/16"),
    ("quantize_row_col row SR", 2 + NVFP4, "bf16 in 2 + codes 0.5 + scales 1/16"),
    ("quantize_row_col", 2 + 2 * NVFP4, "bf16 in 2 + 2 x (0.5 + 1/16)"),
    ("quantize_weight_2d", 2 + 2 * NVFP4, "bf16 in 2 + 2 x (0.5 + 1/16)"),
    ("quantize_2d", 2 + 2 * NVFP4, "bf16 in 2 + 2 x (0.5 + 1/16)"),
    ("amax", 2.0, "bf16 in 2 (+ one 4-B atomic per CTA)"),
    ("dequantize", NVFP4 + 2, "codes 0.5 + scales 1/16 in, bf16 out 2"),
    ("quantize_fp8", 3.0, "bf16 in 2 + e4m3 out 1 (+ 4/K scale)"),
    ("_scale_epilogue", 6.0, "fp32 acc in 4 + bf16 out 2 (+ (4+2)/M + 4/N)"),
]


def bytes_of(label):
    for prefix, b, formula in BYTES:
        if label.startswith(prefix):
            return b, formula
    raise KeyError(label)


# (backend, kernel label) -> [(bench script, row name, shape)] in run1's JSON.
MEASURED_ROWS = {
    ("cuda", "rowwise 1x16 RNE (quantize_nvfp4)"): [("bench_quantize_cuda", "rowwise", "8192x8192")],
    ("cuda", "quantize_row_col RNE, RHT on col"): [
        ("bench_quantize_row_col", "quantize_row_col rne", "8192x14336")],
    ("cuda", "quantize_row_col SR, RHT on col"): [
        ("bench_quantize_row_col", "quantize_row_col sr", "8192x14336")],
    ("cuda", "quantize_weight_2d (W and W^T)"): [("bench_quantize_2d", "quantize_weight_2d", "14336x4096")],
    ("triton", "quantize_row_col row RNE (rowwise)"): [("bench_quantize_cuda", "rowwise", "8192x8192")],
    ("triton", "quantize_row_col row+col RHT RNE"): [
        ("bench_quantize_row_col", "quantize_row_col rne", "8192x14336")],
    ("triton", "quantize_row_col row+col RHT SR"): [
        ("bench_quantize_row_col", "quantize_row_col sr", "8192x14336")],
    ("triton", "quantize_2d row+col RNE"): [("bench_quantize_2d", "quantize_weight_2d", "14336x4096")],
    ("triton", "amax row+col RHT"): [("bench_amax", "amax_row_col", "8192x4096")],
}


def measured(backend, label, folder=MEASURED):
    """(elements/s, of copy, source) from the committed run, or None."""
    for script, name, shape in MEASURED_ROWS.get((backend, label), []):
        for fname in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if not (fname.startswith(script + "_") and fname.endswith(".json")):
                continue
            with open(os.path.join(folder, fname)) as f:
                data = json.load(f)
            for r in data["rows"]:
                if r["name"] == name and r["impl"] == backend and r["shape"] == shape:
                    m, k = (int(v) for v in shape.split("x"))
                    return m * k / (r["time_ms"] * 1e-3), r["of_baseline"], f"{script} {shape}"
    return None


def with_bounds(row):
    b, formula = bytes_of(row["kernel"])
    mem = COPY_BPS / b
    issue = ISSUE_PER_S / row["per_elem"]
    row.update(bytes=b, bytes_formula=formula, mem_bound=mem, issue_bound=issue,
               binds="issue" if issue < mem else "memory", bound=min(mem, issue))
    got = measured(row["backend"], row["kernel"])
    if got:
        row.update(measured=got[0], of_copy=got[1], measured_in=got[2],
                   of_bound=got[0] / row["bound"])
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=["cuda", "triton"])
    args = parser.parse_args(argv)
    rows = []
    if args.only in (None, "cuda"):
        rows += cuda_table()
    if args.only in (None, "triton"):
        rows += triton_table()
    rows = [with_bounds(r) for r in rows]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("kernel_sass: nothing to count on this machine")
        return 0
    g = 1e9
    print(f"{'backend':7s} {'kernel':60s} {'B/el':>6s} {'SASS':>5s} {'/thr':>4s} {'SASS/el':>7s} "
          f"{'min':>5s} {'mem Gel/s':>9s} {'issue Gel/s':>11s} {'binds':>6s} {'meas Gel/s':>10s} "
          f"{'of bound':>8s} {'spill':>5s} {'regs':>4s}")
    for r in rows:
        meas = f"{r['measured'] / g:10.0f}" if "measured" in r else f"{'-':>10s}"
        share = f"{r['of_bound']:8.0%}" if "measured" in r else f"{'-':>8s}"
        print(f"{r['backend']:7s} {r['kernel']:60s} {r['bytes']:6.4g} {r['path']:5d} "
              f"{r['per_thread']:4d} {r['per_elem']:7.1f} {r['min_path']:5d} {r['mem_bound'] / g:9.0f} "
              f"{r['issue_bound'] / g:11.0f} {r['binds']:>6s} {meas} {share} "
              f"{'yes' if r['spilled'] else 'no':>5s} {r.get('regs') or '-':>4}")
    print("SASS: longest hot path (min: shortest; per loop iteration for CUDA and quantize_fp8, per program "
          "otherwise), per thread; /thr: elements per thread in it; bounds: H200, copy "
          "3.4e12 B/s, issue 132x4x1.98e9x32 thread-instructions/s; measured: run1 of "
          "bench/results/NVIDIA_H200-20261127 (elements / median time).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
