"""The swizzled (blocked) scale layout of NUMERICS 8: formula, padding, round trip."""

import pytest
import torch

from lowprec import reference as R


def swizzle_by_formula(scale):
    """Byte by byte: tile (r // 128, c // 4) row-block-major, offset (r%32)*16 + (r//32)*4 + c."""
    rows, cols = scale.shape
    padded_rows, padded_cols = -(-rows // 128) * 128, -(-cols // 4) * 4
    out = bytearray(padded_rows * padded_cols)          # zero padding
    raw = scale.view(torch.uint8).tolist()
    tiles_per_row_block = padded_cols // 4
    for r in range(rows):
        for c in range(cols):
            tile = (r // 128) * tiles_per_row_block + c // 4
            rr, cc = r % 128, c % 4
            out[tile * 512 + (rr % 32) * 16 + (rr // 32) * 4 + cc] = raw[r][c]
    return torch.tensor(list(out), dtype=torch.uint8)


@pytest.mark.parametrize("rows,cols", [(1, 1), (128, 4), (130, 6), (256, 16), (300, 9)])
def test_swizzle_matches_the_formula_and_round_trips(rows, cols):
    torch.manual_seed(rows * cols)
    scale = torch.randint(1, 127, (rows, cols), dtype=torch.uint8).view(torch.float8_e4m3fn)
    swizzled = R.swizzle_scales(scale)
    assert swizzled.dtype == torch.float8_e4m3fn
    assert torch.equal(swizzled.view(torch.uint8), swizzle_by_formula(scale))
    back = R.unswizzle_scales(swizzled, rows, cols)
    assert torch.equal(back.view(torch.uint8), scale.view(torch.uint8))
    padding = swizzled.numel() - rows * cols
    assert (swizzled.view(torch.uint8) == 0).sum() == padding      # scales are never 0 here
