"""Philox4x32-10 (NUMERICS 4.1): known answers and bit-equality with Triton's tl.randint4x."""

import pytest
import torch

from lowprec import reference as R

KNOWN_ANSWERS = [
    (0x0, 0x0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (0x1, 0x0, (0xE3E80670, 0xE50A0EBC, 0x95F222C0, 0xB615AA27)),
    (0x0, 0x1, (0xF8E4CCA4, 0x5CB200DB, 0xB1A574EB, 0x097EFF67)),
    (0xDEADBEEFCAFEF00D, 0x100000007, (0xE8825000, 0x09AE01FE, 0x4D8E57DD, 0xC70AFEA5)),
]


@pytest.mark.parametrize("seed,counter,words", KNOWN_ANSWERS)
def test_known_answers(seed, counter, words):
    got = R.philox4x32_10(seed, torch.tensor([counter & 0xFFFFFFFF]), torch.tensor([counter >> 32]))
    assert tuple(got[0].tolist()) == words


def test_counter_layout_of_flat_elements():
    """Element i uses counter offset + (i >> 2) and word i & 3, with a 64-bit carry."""
    seed, offset = 0xDEADBEEFCAFEF00D, 0x100000007 - 5
    words = R.random_words(seed, offset, 40)
    assert tuple(words[20:24].tolist()) == KNOWN_ANSWERS[3][2]        # counter offset + 5
    carry = R.random_words(7, 0xFFFFFFFF, 8)                          # lo32 wraps into hi32
    direct = R.philox4x32_10(7, torch.tensor([0xFFFFFFFF, 0]), torch.tensor([0, 1]))
    assert torch.equal(carry, direct.reshape(-1))
    wrap = R.random_words(3, 2 ** 64 - 1, 8)                          # 64-bit wrap to 0
    direct = R.philox4x32_10(3, torch.tensor([0xFFFFFFFF, 0]), torch.tensor([0xFFFFFFFF, 0]))
    assert torch.equal(wrap, direct.reshape(-1))


triton = pytest.importorskip("triton", reason="triton is a development dependency")
tl = pytest.importorskip("triton.language")


@triton.jit
def _randint4x_kernel(out_ptr, seed, offset, n_counters, BLOCK: tl.constexpr):
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = j < n_counters
    counter = offset + j.to(tl.uint64)
    r0, r1, r2, r3 = tl.randint4x(seed, counter)
    base = out_ptr + j.to(tl.int64) * 4
    tl.store(base + 0, r0.to(tl.int64) & 0xFFFFFFFF, mask=mask)
    tl.store(base + 1, r1.to(tl.int64) & 0xFFFFFFFF, mask=mask)
    tl.store(base + 2, r2.to(tl.int64) & 0xFFFFFFFF, mask=mask)
    tl.store(base + 3, r3.to(tl.int64) & 0xFFFFFFFF, mask=mask)


@pytest.mark.parametrize("seed,offset", [
    (0x1234, 0),
    (0xDEADBEEFCAFEF00D, 0x100000007),          # seed and offset above 2^32
    (2 ** 64 - 1, 2 ** 33 + 2 ** 32 - 1000),     # counters cross a 2^32 boundary
])
def test_bit_equal_to_triton_randint4x(seed, offset):
    if not torch.cuda.is_available():
        import os
        assert os.environ.get("TRITON_INTERPRET") == "1", "tests/conftest.py sets the interpreter"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_counters = 1 << 17                          # 131072 counters, 524288 words
    out = torch.empty(n_counters * 4, dtype=torch.int64, device=device)
    block = 4096
    _randint4x_kernel[(n_counters // block,)](out, seed, offset, n_counters, BLOCK=block)
    expected = R.random_words(seed, offset, n_counters * 4)
    assert torch.equal(out.cpu(), expected)
