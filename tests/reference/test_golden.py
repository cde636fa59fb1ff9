"""The reference reproduces the independent golden vectors (tests/data, see its README) bit for bit."""

import pytest
import torch

import lowprec
from lowprec import reference as R


def scale_bytes(t):
    return t.scale.view(torch.uint8)


@pytest.mark.parametrize("case", ["normal_bf16", "zeros_and_underflow_bf16", "ties_f32"])
def test_golden_case(golden, case):
    entry = golden["cases"][case]
    x = entry["x"]
    q1 = lowprec.quantize_nvfp4(x, backend="reference")
    assert torch.equal(q1.amax, entry["amax"])
    assert torch.equal(q1.data, entry["q1d_codes"])
    assert torch.equal(scale_bytes(q1), entry["q1d_scales"])
    q2 = lowprec.quantize_nvfp4(x, block="16x16", backend="reference")
    assert torch.equal(q2.data, entry["q2d_codes"])
    assert torch.equal(scale_bytes(q2), entry["q2d_scales"])
    if "rht_values" in entry:
        signs = golden["sign_vector"].tolist()
        assert tuple(signs) == R.DEFAULT_SIGN_VECTOR
        assert torch.equal(R.rht(x, signs), entry["rht_values"])
        qr = lowprec.quantize_nvfp4(x, rht=True, sign_vector=signs, backend="reference")
        assert torch.equal(qr.amax, entry["rht_amax"])
        assert torch.equal(qr.data, entry["rht_codes"])
        assert torch.equal(scale_bytes(qr), entry["rht_scales"])
