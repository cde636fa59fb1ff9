"""The planner's randomness: seeds for its private generators, the curvature probe's
noise, and the caller's RNG state saved and restored around each pass.

The probe noise and the stochastic-rounding words come from generators seeded here, so
the statistics are reproducible and do not consume the caller's random stream; the
caller's own state (dropout) is replayed so that the clean and the noise pass of a batch
see identical draws.
"""

import torch


def mix_seed(*parts):
    """A deterministic 63-bit seed from integers (for the noise generators)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (1 << 63)
    return value


def noise(shape, sigma, seed, device, dtype):
    """``sigma * z`` with ``z`` standard normal from a private generator seeded ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    z = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return (z * sigma).to(dtype)


def save_rng(devices):
    """The CPU RNG state and that of each CUDA device index in ``devices``."""
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def restore_rng(state, devices):
    """Put back a state of ``save_rng`` (same ``devices``)."""
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for d, s in zip(devices, cuda):
        torch.cuda.set_rng_state(s, d)
