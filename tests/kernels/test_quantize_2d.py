"""16x16 weight quantization: rowwise equals the reference; columnwise is its transpose."""

import pytest
import torch

from lowprec import reference as R
from lowprec.kernels.backend import quantize_weight_2d

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def sample(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-6, 7, shape, generator=g))
    return x.to(dtype)


def check_transpose_identity(same_bits, row, col):
    """NUMERICS 5: columnwise codes are exactly the transposed rowwise codes, its scales
    the transposed tile scales (repeated per row of W^T), and the amax is shared."""
    codes = R.unpack_codes(row[0].cpu())
    same_bits(col[0], R.pack_codes(codes.t().contiguous()))
    tile_scales = row[1].cpu().view(torch.uint8)[::16]                  # [N/16, K/16]
    same_bits(col[1], tile_scales.t().repeat_interleave(16, dim=0))
    same_bits(col[2], row[2])


CASES = [(64, 128, "f32", False, 0, 0), (256, 512, "bf16", False, 0, 0),
         (96, 48, "f16", True, 2**63 + 5, 2**64 - 3), (16, 16, "bf16", False, 0, 0),
         (48, 1024, "bf16", True, 17, 2**32 - 1)]


@pytest.mark.parametrize("n,k,dtype,stochastic,seed,offset", CASES)
def test_matches_reference(device, same_bits, same_triple, n, k, dtype, stochastic, seed,
                           offset):
    w = sample((n, k), DTYPES[dtype], seed=n + k)
    row, col = quantize_weight_2d(w.to(device), stochastic=stochastic, seed=seed,
                                  offset=offset)
    same_triple(row, R.quantize_nvfp4(w, block="16x16", stochastic=stochastic, seed=seed,
                                      offset=offset))
    check_transpose_identity(same_bits, row, col)
    if not stochastic:   # with RNE the transposed copy is also the reference's 2-D W^T
        same_triple(col, R.quantize_nvfp4(w.t().contiguous(), block="16x16"))


def test_special_values(device, same_bits, same_triple):
    w = sample((64, 64), torch.float32, seed=2)
    w[0:16, 0:16] = 0.0
    w[16:32, 16:32] *= 1e-38                         # tile scale underflows E4M3: byte 0
    w[40, 3] = float("nan")
    w[50, 60] = -float("inf")
    row, col = quantize_weight_2d(w.to(device))
    same_triple(row, R.quantize_nvfp4(w, block="16x16"))
    check_transpose_identity(same_bits, row, col)
    assert torch.isnan(row[2])


def test_given_amax_and_non_contiguous(device, same_bits, same_triple):
    base = sample((64, 96), torch.bfloat16, seed=3)
    w = base.to(device)[:, 16:80]
    assert not w.is_contiguous()
    amax = torch.tensor(0.25)
    row, col = quantize_weight_2d(w, amax=amax.to(device))
    same_triple(row, R.quantize_nvfp4(base[:, 16:80], block="16x16", amax=amax))
    check_transpose_identity(same_bits, row, col)


def test_rowwise_only(device, same_triple):
    w = sample((32, 64), torch.bfloat16, seed=4)
    row, col = quantize_weight_2d(w.to(device), columnwise=False)
    assert col is None
    same_triple(row, R.quantize_nvfp4(w, block="16x16"))
