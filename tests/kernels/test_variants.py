"""Kernel variants (lowprec/kernels/variants.py): the registry, the bits of every Triton
variant, the winners a kernel table runs, and the sweep that chooses them.

Every Triton variant runs in the interpreter at small shapes (odd M, RNE and SR, RHT,
specials) and must equal ``lowprec.reference`` bit for bit; its sm_90 build must not
spill. The kernel table runs the winners of a winners mapping (monkeypatched here) and
refuses an unknown variant name, naming it. The sweep (lowprec/bench/sweep_variants.py)
disqualifies a candidate whose bits differ, and never picks it.

Mutations tried: the persistent amax kernel's loop stopping one tile early
(``range(pid, num_tiles - 1, ...)``: test_amax_variant_matches_reference fails on the
outlier placed in the last tile); the sweep's ``difference`` returning None (the
disqualification tests fail).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from lowprec import backends, dispatch
from lowprec import reference as R
from lowprec.kernels import backend as TB
from lowprec.kernels import launches as L
from lowprec.kernels import variants as V

SIGNS = R.DEFAULT_SIGN_VECTOR
OTHER_SIGNS = (-1, 1, 1, 1, -1, -1, 1, -1, 1, 1, -1, -1, -1, 1, 1, -1)
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def variants_of(op):
    return [name for name in V.names(op, "triton") if name != V.BASELINE]


def sample(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-6, 7, shape, generator=g))
    return x.to(dtype)


def with_specials(x):
    """NaN, +-Inf, -0.0 and a zero block in a [>=48, >=64] tensor."""
    x = x.clone()
    x[0:16, 0:16] = 0.0
    x[20, 3] = float("nan")
    x[21, 40] = float("inf")
    x[33, 50] = -float("inf")
    x[40, :] = -0.0
    return x


def pad_rows(x):
    m = x.shape[0]
    return torch.cat([x, x.new_zeros(-m % 16, x.shape[1])]) if m % 16 else x


# ----------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------

def test_registry_shape():
    assert set(V.VARIANT_OPS) == set(V.TRITON_LAUNCHES)
    for op in V.VARIANT_OPS:
        for backend in V.BACKENDS:
            names = V.names(op, backend)
            assert names[0] == V.BASELINE and len(set(names)) == len(names), (op, backend)
        if op != "amax":
            # The baseline is today's function itself, not a copy of it.
            assert V.candidate(op, "triton", V.BASELINE) is getattr(TB, op)
    for op, launches in V.TRITON_LAUNCHES.items():
        for name, launch in launches.items():
            assert name != V.BASELINE
            if op.startswith("quantize_fp8"):       # tests/kernels/test_fp8_variants.py
                continue
            for value in (launch.chunks, launch.block_k, launch.num_warps):
                assert value & (value - 1) == 0, (op, name)     # powers of two
            assert launch.block_k >= 16 and launch.num_warps <= 16
    assert len(variants_of("quantize_row_col")) >= 3
    assert len(variants_of("amax")) >= 3
    assert len(variants_of("quantize_fp8")) >= 3
    assert len(variants_of("quantize_fp8_row_col")) >= 3
    assert all(callable(f) for f in V.candidates("quantize_weight_2d", "triton").values())


def test_cuda_names_come_from_the_extension_table(monkeypatch):
    from lowprec.backends import extension
    monkeypatch.setattr(extension, "CUDA_VARIANTS",
                        {"quantize_row_col": {"baseline": 0, "vec16": 1, "smem_t": 2}})
    assert V.names("quantize_row_col", "cuda") == ("baseline", "vec16", "smem_t")
    assert V.names("quantize_weight_2d", "cuda") == ("baseline",)
    fn = V.candidate("quantize_row_col", "cuda", "smem_t")
    assert fn.func is extension.quantize_row_col and fn.keywords == {"variant": 2}
    monkeypatch.setattr(extension, "CUDA_VARIANTS", {})     # an extension without any
    assert V.names("quantize_row_col", "cuda") == ("baseline",)


def test_committed_winners_file_is_valid():
    with open(V.WINNERS_PATH) as f:
        record = json.load(f)
    assert record["format"] == V.WINNERS_FORMAT
    V.check_winners(V.load_winners())


# ----------------------------------------------------------------------------------
# Bits: every Triton variant equals the reference (interpreter, small shapes)
# ----------------------------------------------------------------------------------

ROW_COL_CASES = [
    # (M, K, dtype, signs, row SR, col SR, seed, row offset, col offset, specials)
    (33, 128, "bf16", SIGNS, False, False, 0, 0, 0, False),
    (100, 256, "f32", OTHER_SIGNS, True, True, 2**64 - 1, 2**64 - 5, 2**40, False),
    (48, 64, "f16", SIGNS, True, False, 7, 3, 0, True),
    (50, 96, "bf16", None, False, True, 11, 0, 2**63 + 5, True),
]


@pytest.mark.parametrize("variant", variants_of("quantize_row_col"))
@pytest.mark.parametrize("case", range(len(ROW_COL_CASES)))
def test_row_col_variant_matches_reference(device, same_triple, variant, case):
    m, k, dtype, signs, row_sr, col_sr, seed, row_off, col_off, specials = ROW_COL_CASES[case]
    x = sample((m, k), DTYPES[dtype], seed=m * k + case)
    if specials:
        x = with_specials(x)
    fn = V.candidate("quantize_row_col", "triton", variant)
    row, col = fn(x.to(device), rht_signs=signs, row_stochastic=row_sr,
                  col_stochastic=col_sr, seed=seed, row_offset=row_off, col_offset=col_off)
    want_row, want_col = R.quantize_row_col(x, rht_signs=signs, row_stochastic=row_sr,
                                            col_stochastic=col_sr, seed=seed,
                                            row_offset=row_off, col_offset=col_off)
    same_triple(row, want_row)
    same_triple(col, want_col)


@pytest.mark.parametrize("amax", variants_of("amax"))
def test_row_col_with_amax_variant(device, same_triple, amax):
    """A quantizer measuring its amaxes with an amax variant (the winners pair them)."""
    x = sample((70, 192), torch.bfloat16, seed=5)
    fn = V.candidate("quantize_row_col", "triton", "t32x128w8", amax=amax)
    row, col = fn(x.to(device), rht_signs=SIGNS, col_stochastic=True, seed=3, col_offset=99)
    want_row, want_col = R.quantize_row_col(x, rht_signs=SIGNS, col_stochastic=True, seed=3,
                                            col_offset=99)
    same_triple(row, want_row)
    same_triple(col, want_col)


@pytest.mark.parametrize("variant", variants_of("quantize_nvfp4"))
def test_nvfp4_variant_matches_reference(device, same_triple, variant):
    fn = V.candidate("quantize_nvfp4", "triton", variant, amax="persistent")
    x = sample((37, 80), torch.bfloat16, seed=2)               # 1x16, odd rows
    same_triple(fn(x.to(device), stochastic=True, seed=4, offset=2**64 - 3),
                R.quantize_nvfp4(x, stochastic=True, seed=4, offset=2**64 - 3))
    same_triple(fn(x.to(device), rht_signs=OTHER_SIGNS),      # RHT along K
                R.quantize_nvfp4(x, rht_signs=OTHER_SIGNS))
    w = sample((48, 64), torch.float32, seed=3)                # 16x16 tiles
    same_triple(fn(w.to(device), block="16x16"), R.quantize_nvfp4(w, block="16x16"))


@pytest.mark.parametrize("variant", variants_of("quantize_weight_2d"))
@pytest.mark.parametrize("dtype,stochastic", [("bf16", False), ("f32", True), ("f16", False)])
def test_weight_2d_variant_matches_reference(device, same_triple, variant, dtype, stochastic):
    w = sample((80, 128), DTYPES[dtype], seed=9)
    if dtype == "f16":
        w = with_specials(w)
    fn = V.candidate("quantize_weight_2d", "triton", variant)
    row, col = fn(w.to(device), stochastic=stochastic, seed=17, offset=2**40)
    want_row, want_col = R.quantize_weight_2d(w, stochastic=stochastic, seed=17, offset=2**40)
    same_triple(row, want_row)
    same_triple(col, want_col)


def reference_amax(x, signs):
    col = x if signs is None else R.rht(pad_rows(x).t().contiguous(), signs)
    return torch.stack([R.tensor_amax(x), R.tensor_amax(col.to(torch.float32))])


def canonical(pair):
    return torch.where(torch.isfinite(pair), pair, torch.full_like(pair, float("nan")))


AMAX_CASES = [
    # (M, K, dtype, signs, specials): 100x512 is 7 x 2 tiles of 16x256 (more tiles than a
    # persistent grid has programs in the interpreter), the outlier in the last tile.
    (100, 512, "bf16", SIGNS, False),
    (100, 512, "f32", OTHER_SIGNS, False),
    (48, 640, "f16", None, False),
    (64, 128, "bf16", SIGNS, True),
]


@pytest.mark.parametrize("variant", variants_of("amax"))
@pytest.mark.parametrize("case", range(len(AMAX_CASES)))
def test_amax_variant_matches_reference(device, same_bits, variant, case):
    m, k, dtype, signs, specials = AMAX_CASES[case]
    x = sample((m, k), torch.float32, seed=case)
    x[-1, -1] = 4096.0 * (1 + case)                  # the max, in the last tile
    x = with_specials(x) if specials else x
    x = x.to(DTYPES[dtype])
    got = V.candidate("amax", "triton", variant)(x.to(device), signs)
    base = V.candidate("amax", "triton", V.BASELINE)(x.to(device), signs)
    same_bits(got, base)                             # raw bits, as the baseline's
    same_bits(canonical(got.cpu()), canonical(reference_amax(x, signs)))


# ----------------------------------------------------------------------------------
# Offline: every Triton variant compiles for sm_90 without spills
# ----------------------------------------------------------------------------------

BIN = os.path.join(os.path.dirname(__import__("triton").__file__), "backends", "nvidia", "bin")


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "ptxas")),
                    reason="needs the ptxas that Triton's NVIDIA backend ships")
def test_every_variant_compiles_for_hopper_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "0")
    out = subprocess.run([sys.executable, "-m", "lowprec.kernels.variants", "--json"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    expected = sum(len(keys) * (1 + len(V.TRITON_LAUNCHES[op]))
                   for op, keys in V.AOT_KERNELS.items())
    # FP8: each kernel's baseline, then each kernel a variant changes.
    expected += len(V.FP8_BASE) + len(V.FP8_LAUNCHES) + sum(
        (pair.column is not None) + (pair.fused is not None)
        for pair in V.FP8_ROW_COL_LAUNCHES.values())
    assert len(facts) == expected
    assert any(name.startswith(V.FP8_FUSED) for name in facts)
    for name, f in facts.items():
        assert f["spill"] == 0, (name, f)             # no local memory in any variant
        assert f["ld_v4"], (name, f)                  # 16-byte loads kept
        assert f["regs"] <= 255, (name, f)


# ----------------------------------------------------------------------------------
# Winners -> kernel table and dispatch names
# ----------------------------------------------------------------------------------

@pytest.fixture
def winners(monkeypatch):
    """Set a winners mapping for one test (kernel tables rebuilt), restored after."""
    monkeypatch.setattr(backends, "_TABLES", {})

    def use(mapping):
        V.set_winners(mapping)
    yield use
    V.set_winners(None)


def ampere_table():
    # Ampere: the Triton backend runs the quantizers (no CUDA kernels before sm_90).
    return backends.KernelTable(torch.device("cuda"), installed=True, capability=(8, 0))


def test_no_winners_means_todays_functions(winners):
    winners({})
    table = ampere_table()
    assert table.quantize_row_col is TB.quantize_row_col
    assert table.quantize_weight_2d is TB.quantize_weight_2d
    assert table.names["quantize_row_col"] == "triton:quantize_row_col"
    baseline_only = {"quantize_row_col": {"triton": {"8.0": {"bfloat16": "baseline"}}}}
    winners(baseline_only)
    assert ampere_table().quantize_row_col is TB.quantize_row_col


def test_table_runs_the_winner(winners, monkeypatch, same_triple):
    winners({"quantize_row_col": {"triton": {"8.0": {"bfloat16": "t64x64w8"}}},
             "amax": {"triton": {"8.0": {"bfloat16": "persistent"}}},
             "quantize_weight_2d": {"triton": {"9.0": {"bfloat16": "t16x256w8"}}}})
    table = ampere_table()
    name = "triton:quantize_row_col [variant bfloat16=t64x64w8 (amax persistent)]"
    assert table.names["quantize_row_col"] == name
    assert dispatch.table((8, 0))[1]["quantize_row_col"] == name
    # The 9.0 winner does not apply at 8.0; the amax winner does (it measures W's amax).
    assert table.names["quantize_weight_2d"] == \
        "triton:quantize_weight_2d [variant bfloat16=baseline (amax persistent)]"
    # The entry is a dtype dict resolved once; the bf16 call launches the variant's tile.
    import lowprec.kernels.quantize_row_col as q1
    seen, launch = [], q1.quantize_row_col

    def spy(x, **kwargs):
        seen.append((kwargs.get("tile"), kwargs.get("amax_tile")))
        return launch(x, **kwargs)
    monkeypatch.setattr(q1, "quantize_row_col", spy)
    x = sample((40, 64), torch.bfloat16, seed=1)
    row, col = table.quantize_row_col(x, rht_signs=SIGNS)
    want_row, want_col = R.quantize_row_col(x, rht_signs=SIGNS)
    same_triple(row, want_row)
    same_triple(col, want_col)
    table.quantize_row_col(x.float(), rht_signs=SIGNS)        # no float32 winner: baseline
    assert seen == [(L.ROW_COL_LAUNCHES["t64x64w8"], V.AMAX_LAUNCHES["persistent"]),
                    (None, None)]


def test_cuda_winner_passes_the_variant_number(winners, monkeypatch):
    from lowprec.backends import cuda, extension
    monkeypatch.setattr(extension, "CUDA_VARIANTS",
                        {"quantize_row_col": {"baseline": 0, "vec16": 1}})
    calls = []
    monkeypatch.setattr(extension, "quantize_row_col", lambda x, **kw: calls.append(kw))
    winners({"quantize_row_col": {"cuda": {"9.0": {"bfloat16": "vec16"}}}})
    table = backends.KernelTable(torch.device("cuda"), installed=True, capability=(9, 0))
    assert table.names["quantize_row_col"] == "cuda:quantize_row_col [variant bfloat16=vec16]"
    assert table.quantize_row_col.base is cuda.quantize_row_col
    table.quantize_row_col(torch.ones(16, 16, dtype=torch.bfloat16), rht_signs=None)
    assert calls == [{"rht_signs": None, "variant": 1}]
    # Other capabilities and ops: today's functions.
    hopper_names = dispatch.table((10, 0))[1]
    assert hopper_names["quantize_row_col"] == "cuda:quantize_row_col"


@pytest.mark.parametrize("mapping, named", [
    ({"quantize_row_col": {"triton": {"8.0": {"bfloat16": "t99x99"}}}}, "t99x99"),
    ({"amax": {"triton": {"8.0": {"bfloat16": "nope"}}}}, "nope"),
    ({"quantize_row_col": {"triton": {"8.0": {"bf16": "t64x64w8"}}}}, "bf16"),
    ({"quantize_row_col": {"tpu": {"8.0": {"bfloat16": "baseline"}}}}, "tpu"),
])
def test_unknown_winner_is_an_error_naming_it(winners, mapping, named):
    winners(mapping)
    with pytest.raises(ValueError, match=named):
        V.check_winners(mapping)
    if "tpu" not in mapping.get("quantize_row_col", {}):
        with pytest.raises(ValueError, match=named):
            ampere_table()
        with pytest.raises(ValueError, match=named):
            dispatch.table((8, 0))


# ----------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------

@pytest.fixture
def sweep(monkeypatch):
    """lowprec.bench.sweep_variants, timing with the wall clock on CPU tensors."""
    from lowprec.bench import sweep_variants as module

    monkeypatch.setattr(module.common, "SMOKE", True)
    monkeypatch.setattr(module.common, "DEVICE", "cpu")
    return module


def flip_first_code(fn):
    def wrong(w, **kwargs):
        row, col = fn(w, **kwargs)
        data = row[0].clone()
        data.view(-1)[0] ^= 1
        return (data, *row[1:]), col
    return wrong


def failing(w, **kwargs):
    raise RuntimeError("launch failed")


@pytest.mark.parametrize("against", ["reference", "baseline"])
def test_sweep_disqualifies_wrong_candidates(sweep, monkeypatch, against):
    if against == "baseline":      # a large problem: compared with the backend's baseline
        monkeypatch.setattr(sweep, "REFERENCE_ELEMENTS", 0)
    base = TB.quantize_weight_2d
    candidates = {"baseline": base, "t64x64w8": V.candidate("quantize_weight_2d", "triton",
                                                            "t64x64w8"),
                  "flips_a_bit": flip_first_code(base), "raises": failing}
    rows, disqualified, winner, totals = sweep.sweep(
        "quantize_weight_2d", "triton", candidates, [(32, 64)], torch.bfloat16, reps=1)
    assert {d["variant"] for d in disqualified} == {"flips_a_bit", "raises"}
    assert "differs from" in next(d for d in disqualified
                                  if d["variant"] == "flips_a_bit")["reason"]
    assert set(totals) == {"baseline", "t64x64w8"}
    assert {r["variant"] for r in rows} == {"baseline", "t64x64w8"}
    assert winner in ("baseline", "t64x64w8")


def test_sweep_never_picks_a_fast_wrong_candidate(sweep, monkeypatch):
    monkeypatch.setattr(sweep, "pick", lambda totals, base, *a: min(totals, key=totals.get))
    base = TB.quantize_weight_2d
    wrong = flip_first_code(base)
    _, disqualified, winner, _ = sweep.sweep(
        "quantize_weight_2d", "triton", {"baseline": base, "wrong": wrong}, [(32, 64)],
        torch.bfloat16, reps=1)
    assert winner == "baseline" and [d["variant"] for d in disqualified] == ["wrong"]


def test_sweep_baseline_that_differs_from_the_reference_fails_the_op(sweep):
    base = flip_first_code(TB.quantize_weight_2d)
    rows, disqualified, winner, _ = sweep.sweep(
        "quantize_weight_2d", "triton", {"baseline": base}, [(32, 64)], torch.bfloat16, reps=1)
    assert winner is None and rows == [] and disqualified[0]["variant"] == "baseline"


def test_sweep_checks_the_amax_op(sweep):
    _, disqualified, winner, totals = sweep.sweep(
        "amax", "triton", V.candidates("amax", "triton"), [(40, 256)], torch.bfloat16, reps=1)
    assert disqualified == [] and set(totals) == set(V.names("amax", "triton"))


def test_pick_needs_more_than_margin_and_noise(sweep):
    assert sweep.pick({"baseline": 10.0, "a": 9.9, "b": 9.0}, "baseline") == "b"
    assert sweep.pick({"baseline": 10.0, "a": 9.9}, "baseline") == "baseline"
    assert sweep.pick({"baseline": 10.0, "b": 9.0}, "baseline", spread=0.2) == "baseline"
    assert sweep.pick({"a": 1.0}, "baseline") is None


def test_update_winners_merges_and_validates(sweep, tmp_path):
    path = str(tmp_path / "winners.json")
    run = {"capability": "9.0"}
    sweep.update_winners(path, {"amax": {"triton": {"9.0": {"bfloat16": "persistent"}}}}, run)
    sweep.update_winners(path, {"quantize_row_col": {"triton": {"9.0": {
        "bfloat16": "baseline"}}}}, run)
    record = json.load(open(path))
    assert record["format"] == V.WINNERS_FORMAT and len(record["runs"]) == 2
    assert V.load_winners(path) == {
        "amax": {"triton": {"9.0": {"bfloat16": "persistent"}}},
        "quantize_row_col": {"triton": {"9.0": {"bfloat16": "baseline"}}}}
    before = open(path).read()
    with pytest.raises(ValueError, match="t99"):
        sweep.update_winners(path, {"amax": {"triton": {"9.0": {"bfloat16": "t99"}}}}, run)
    assert open(path).read() == before                   # nothing written
