"""FP8 cast variants (lowprec/kernels/variants.py): ``quantize_fp8`` and
``quantize_fp8_row_col`` launched with other tiles and warps.

Every variant runs in the interpreter with its GPU tile (partial tiles, several steps
down M for the column pass, several K steps) and must equal ``lowprec.reference``'s
``quantize_fp8_rowwise`` / ``quantize_fp8_row_col`` byte for byte (scales as FP32
bits), specials included; the variant's tile must reach the launch; the kernel table
runs an FP8 winner; the sweep disqualifies a wrong FP8 candidate.

Mutations tried: ``quantize_fp8_row_col(x, tile)`` taking the column kernel's ``BLOCK_C``
from ``tile.column.block_r`` instead of ``block_k`` (the launch test fails on the BLOCK_C
it sees); the column grid sized by today's stripe instead of the variant's (``c512x8w8``
leaves half the column scales unwritten: the bits tests fail).
"""

import pytest
import torch

from lowprec import backends
from lowprec import reference as R
from lowprec.kernels import fp8 as fp8_kernels
from lowprec.kernels import variants as V

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
TINY = {torch.float32: 1e-40, torch.bfloat16: 1e-39, torch.float16: 6e-8}


def variants_of(op):
    return [name for name in V.names(op, "triton") if name != V.BASELINE]


def sample(shape, dtype, seed, specials=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(
        torch.randint(-12, 12, shape, generator=g).float())
    if shape[0] > 2 and shape[1] > 2:
        x[1] = 0.0                                     # zero row: scale 1
        x[:, 2] = 0.0                                  # zero column: scale 1
    if specials:                                       # needs [>= 9, >= 20]
        tiny = TINY[dtype]
        x[0, :8] = torch.tensor([float("nan"), 1.0, -0.0, float("inf"), -float("inf"),
                                 tiny, -tiny, 0.0])
        x[3, 9] = float("nan")
        x[4, 10] = -float("inf")                       # Inf amax: scale Inf, Inf/Inf NaN
        x[6] = -0.0                                    # a row of -0.0: codes 0x80
        x[:, 12] = -0.0                                # a column of -0.0
        x[:, 13] = tiny                                # a column of subnormals
        x[8] = tiny                                    # a row of subnormals
    return x.to(dtype)


CASES = [
    # (shape, dtype, specials): odd sizes, partial tiles, 600 rows = several steps of
    # every column variant's BLOCK_M, 2100 columns = several K steps of every tile.
    ((130, 300), "bf16", False),
    ((600, 40), "f32", False),
    ((40, 70), "f16", True),
    ((45, 33), "bf16", True),
    ((5, 2100), "bf16", False),
    ((1, 77), "f32", False),
    ((77, 1), "bf16", False),
]


def case_input(case):
    shape, dtype, specials = CASES[case]
    return sample(shape, DTYPES[dtype], seed=shape[0] * 1000 + shape[1] + case,
                  specials=specials)


# Each FP8 cast's variants against the reference function of that cast.
FP8_CASTS = {"quantize_fp8_row_col": R.quantize_fp8_row_col, "quantize_fp8": R.quantize_fp8_rowwise}


@pytest.mark.parametrize("op,variant", [(op, variant) for op in FP8_CASTS
                                        for variant in variants_of(op)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fp8_variant_matches_reference(device, same_bits, op, variant, case):
    x = case_input(case)
    got = V.candidate(op, "triton", variant)(x.to(device))
    want = FP8_CASTS[op](x)
    assert [t.dtype for t in got] == [t.dtype for t in want]
    for g, w in zip(got, want):
        same_bits(g, w)


def test_fp8_variant_leading_dims(device, same_bits):
    """quantize_fp8 keeps x's leading dimensions (a 3-D activation)."""
    x = sample((3, 7, 50), torch.bfloat16, seed=4)
    got = V.candidate("quantize_fp8", "triton", "r16x256w4")(x.to(device))
    want = R.quantize_fp8_rowwise(x)
    assert got[0].shape == (3, 7, 50) and got[1].shape == (3, 7, 1)
    for g, w in zip(got, want):
        same_bits(g, w)


def test_registry(monkeypatch):
    for op, launches in (("quantize_fp8", V.FP8_LAUNCHES),
                         ("quantize_fp8_row_col", V.FP8_ROW_COL_LAUNCHES)):
        assert op in V.VARIANT_OPS and V.TRITON_LAUNCHES[op] is launches
        assert V.names(op, "triton") == (V.BASELINE, *launches)
    tiles = list(V.FP8_LAUNCHES.values())
    for pair in V.FP8_ROW_COL_LAUNCHES.values():
        assert pair.column is not None or pair.fused is not None
        tiles += [t for t in pair if t is not None]
    for t in tiles:
        for value in (t.block_r, t.block_k, t.num_warps):
            assert value & (value - 1) == 0, t                 # powers of two
    # The GPU baselines the offline counts (aot_specs, lowprec/bench/kernel_sass.py) use are
    # today's GPU launches.
    monkeypatch.setattr(fp8_kernels, "interpreting", lambda: False)
    (bm, bc), (br, bk), (wc, wr) = fp8_kernels.row_col_blocks(8192, 4096)
    assert V.FP8_BASE[V.FP8_COLUMN] == V.Fp8Launch(bm, bc, wc)
    assert V.FP8_BASE[V.FP8_FUSED] == V.Fp8Launch(br, bk, wr)


class Recorder:
    """Stands in for a @triton.jit kernel: records (BLOCK constexprs, num_warps) of each
    launch and launches the real kernel."""

    def __init__(self, kernel, seen, keys):
        self.kernel, self.seen, self.keys = kernel, seen, keys

    def __getitem__(self, grid):
        def launch(**kwargs):
            self.seen.append(tuple(kwargs[k] for k in self.keys) + (kwargs["num_warps"],))
            return self.kernel[grid](**kwargs)
        return launch


@pytest.mark.parametrize("variant", variants_of("quantize_fp8_row_col"))
def test_row_col_variant_tile_reaches_the_launch(device, monkeypatch, variant):
    seen = []
    monkeypatch.setattr(fp8_kernels, "_column_scale_kernel", Recorder(
        fp8_kernels._column_scale_kernel, seen, ("BLOCK_M", "BLOCK_C")))
    monkeypatch.setattr(fp8_kernels, "_quantize_fp8_row_col_kernel", Recorder(
        fp8_kernels._quantize_fp8_row_col_kernel, seen, ("BLOCK_R", "BLOCK_K")))
    x = sample((20, 24), torch.bfloat16, seed=1).to(device)
    V.candidate("quantize_fp8_row_col", "triton", variant)(x)
    V.candidate("quantize_fp8_row_col", "triton", V.BASELINE)(x)
    (bm, bc), (br, bk), (warps_c, warps_r) = fp8_kernels.row_col_blocks(20, 24)
    base_column, base_fused = (bm, bc, warps_c), (br, bk, warps_r)
    pair = V.FP8_ROW_COL_LAUNCHES[variant]
    want_column = base_column if pair.column is None else (
        pair.column.block_r, pair.column.block_k, pair.column.num_warps)
    want_fused = base_fused if pair.fused is None else (
        pair.fused.block_r, pair.fused.block_k, pair.fused.num_warps)
    assert seen == [want_column, want_fused, base_column, base_fused]


@pytest.mark.parametrize("variant", variants_of("quantize_fp8"))
def test_fp8_variant_tile_reaches_the_launch(device, monkeypatch, variant):
    seen = []
    monkeypatch.setattr(fp8_kernels, "_quantize_fp8_kernel", Recorder(
        fp8_kernels._quantize_fp8_kernel, seen, ("BLOCK_R", "BLOCK_K")))
    V.candidate("quantize_fp8", "triton", variant)(
        sample((20, 24), torch.bfloat16, seed=1).to(device))
    t = V.FP8_LAUNCHES[variant]
    assert seen == [(t.block_r, t.block_k, t.num_warps)]


@pytest.mark.parametrize("op, args", [
    ("triton_quantize_fp8", ("r16x256w4",)),
    ("triton_quantize_fp8_row_col", ("c512x8w8_r32x128w8",)),
])
def test_custom_op_registration(device, op, args):
    """Schema, fake implementation and dispatch (what torch.compile traces)."""
    x = torch.randn(24, 40, device=device, dtype=torch.bfloat16)
    torch.library.opcheck(getattr(torch.ops.lowprec, op), (x, *args),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


# ----------------------------------------------------------------------------------
# Winners -> kernel table
# ----------------------------------------------------------------------------------

@pytest.fixture
def winners(monkeypatch):
    monkeypatch.setattr(backends, "_TABLES", {})
    yield V.set_winners
    V.set_winners(None)


def test_table_runs_the_fp8_winners(winners, monkeypatch, same_bits):
    winners({"quantize_fp8_row_col": {"triton": {"8.0": {"bfloat16": "r64x64w8"}}},
             "quantize_fp8": {"triton": {"8.0": {"float32": "r8x512w8"}}}})
    table = backends.KernelTable(torch.device("cuda"), installed=True, capability=(8, 0))
    assert table.names["quantize_fp8_row_col"] == \
        "triton:quantize_fp8_row_col [variant bfloat16=r64x64w8]"
    assert table.names["quantize_fp8"] == "triton:quantize_fp8 [variant float32=r8x512w8]"
    seen = []
    real_row_col, real_rowwise = fp8_kernels.quantize_fp8_row_col, fp8_kernels.quantize_fp8

    def spy_row_col(x, tile=None):
        seen.append(tile)
        return real_row_col(x, tile=tile)

    def spy_rowwise(x, tile=None):
        seen.append(tile)
        return real_rowwise(x, tile=tile)
    monkeypatch.setattr(fp8_kernels, "quantize_fp8_row_col", spy_row_col)
    monkeypatch.setattr(fp8_kernels, "quantize_fp8", spy_rowwise)
    x = sample((40, 64), torch.bfloat16, seed=2)
    for g, w in zip(table.quantize_fp8_row_col(x), R.quantize_fp8_row_col(x)):
        same_bits(g, w)
    table.quantize_fp8_row_col(x.float())           # no float32 winner: the baseline op
    for g, w in zip(table.quantize_fp8(x.float()), R.quantize_fp8_rowwise(x.float())):
        same_bits(g, w)
    assert seen == [V.FP8_ROW_COL_LAUNCHES["r64x64w8"], None, V.FP8_LAUNCHES["r8x512w8"]]
    # No winners: today's functions themselves.
    winners({})
    from lowprec.kernels import backend as TB
    table = backends.KernelTable(torch.device("cuda"), installed=True, capability=(8, 0))
    assert table.quantize_fp8_row_col is TB.quantize_fp8_row_col
    assert table.quantize_fp8 is TB.quantize_fp8


def test_unknown_fp8_winner_is_an_error_naming_it(winners):
    mapping = {"quantize_fp8_row_col": {"triton": {"8.0": {"bfloat16": "c99x99"}}}}
    winners(mapping)
    with pytest.raises(ValueError, match="c99x99"):
        V.check_winners(mapping)
    with pytest.raises(ValueError, match="c99x99"):
        backends.KernelTable(torch.device("cuda"), installed=True, capability=(8, 0))


# ----------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------

@pytest.fixture
def sweep(monkeypatch):
    from lowprec.bench import sweep_variants as module

    monkeypatch.setattr(module.common, "SMOKE", True)
    monkeypatch.setattr(module.common, "DEVICE", "cpu")
    return module


def flip_column_code(fn):
    """The columnwise codes with one bit of one byte flipped (the last output's twin)."""
    def wrong(x):
        out = list(fn(x))
        data = out[-2].view(torch.uint8).clone()
        data.view(-1)[-1] ^= 1
        out[-2] = data.view(torch.float8_e4m3fn)
        return tuple(out)
    return wrong


@pytest.mark.parametrize("op", ["quantize_fp8_row_col", "quantize_fp8"])
@pytest.mark.parametrize("against", ["reference", "baseline"])
def test_sweep_disqualifies_a_wrong_fp8_candidate(sweep, monkeypatch, op, against):
    if against == "baseline":      # a large problem: compared with the backend's baseline
        monkeypatch.setattr(sweep, "REFERENCE_ELEMENTS", 0)
    good = variants_of(op)[0]
    candidates = {"baseline": V.candidate(op, "triton", V.BASELINE),
                  good: V.candidate(op, "triton", good),
                  "flips_a_bit": flip_column_code(V.candidate(op, "triton", good))}
    rows, disqualified, winner, totals = sweep.sweep(op, "triton", candidates, [(40, 64)],
                                                     torch.bfloat16, reps=1)
    assert [d["variant"] for d in disqualified] == ["flips_a_bit"]
    assert "differs from" in disqualified[0]["reason"]
    assert set(totals) == {"baseline", good}
    assert {r["variant"] for r in rows} == {"baseline", good}
    assert winner in ("baseline", good)


def test_sweep_checks_every_fp8_candidate(sweep):
    for op in ("quantize_fp8", "quantize_fp8_row_col"):
        _, disqualified, winner, totals = sweep.sweep(
            op, "triton", V.candidates(op, "triton"), [(40, 64)], torch.bfloat16, reps=1)
        assert disqualified == [] and set(totals) == set(V.names(op, "triton"))
        assert winner in V.names(op, "triton")
    assert sweep.nbytes("quantize_fp8_row_col", 40, 64, 2) == 40 * 64 * 4 + 4 * 104
