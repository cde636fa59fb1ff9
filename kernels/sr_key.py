"""The next stochastic-rounding key of a layer's stream, made on the device.

``lowprec.sr_keys`` gives call ``c`` of a stream the key ``mix(stream_base ^ c)``, where
``stream_base = mix(mix(run_seed) ^ stream_id)`` and ``mix`` is splitmix64's output
function; a forward recomputed inside a backward counts separately, as call
``2^63 + r``. On the host the count lives in a CPU tensor and the key is passed to the
quantize kernels by value. For a CUDA graph that cannot work: a replay repeats the
launch arguments captured once, so every replay would draw the words of the captured
call. Device keys keep the count on the GPU: this kernel reads it, writes the key where
the quantize kernel reads it (``seed_tensor``), and advances the count, so each replay
of a captured step draws the next key, as the eager run does.

One program, one thread's work: a few integer operations, in uint64 (shifts are
logical, products and sums wrap modulo 2^64, as the host's ``& MASK64``).
"""

import torch
import triton
import triton.language as tl

from .config import launch_options


@triton.jit
def _mix(z):
    """splitmix64's output function on a uint64 (``lowprec.sr_keys._mix``)."""
    z = z + 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)


@triton.jit(do_not_specialize=["stream_base", "call_base"])
def _next_key_kernel(
        # Pointers: the stream's counts (int64 [2]: calls, recomputed calls) and the key
        # (int64 [1], the uint64 key's bits).
        counts_ptr, key_ptr,
        # The stream's base (mix(mix(run_seed) ^ stream_id)) and what call numbers of
        # this slot start at (0, or 2^63 for recomputed calls).
        stream_base: tl.uint64, call_base: tl.uint64,
        # Meta-parameter: which count (0: calls, 1: recomputed calls).
        SLOT: tl.constexpr):
    count = tl.load(counts_ptr + SLOT)
    tl.store(counts_ptr + SLOT, count + 1)
    call = count.to(tl.uint64, bitcast=True) + call_base
    key = _mix(stream_base ^ call)
    tl.store(key_ptr, key.to(tl.int64, bitcast=True))


def next_device_sr_key(counts, stream_base, recomputed=False):
    """Advance the stream's device ``counts`` (int64 [2]) and return its next key as an
    int64 ``[1]`` tensor on the same device, in one launch. ``stream_base``: an int in
    [0, 2^64); ``recomputed``: the call is a checkpoint's recomputation (slot 1)."""
    key = torch.empty(1, dtype=torch.int64, device=counts.device)
    _next_key_kernel[(1,)](counts_ptr=counts, key_ptr=key, stream_base=stream_base,
                           call_base=(1 << 63) if recomputed else 0,
                           SLOT=1 if recomputed else 0, **launch_options())
    return key
