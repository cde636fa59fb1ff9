"""The stochastic-rounding key rule of docs/numerics.md, computed here independently of
``lowprec.sr_keys`` (NumPy uint64 arithmetic, which wraps modulo 2^64, instead of Python
integers), so the tests that pin keys never take them from the code under test."""

import hashlib

import numpy as np

GOLDEN, MUL1, MUL2 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                      np.uint64(0x94D049BB133111EB))


def splitmix64(z):
    """One step of splitmix64 from state ``z``: its output (the finalizer of z + golden)."""
    with np.errstate(over="ignore"):
        z = np.uint64(z) + GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MUL1
        z = (z ^ (z >> np.uint64(27))) * MUL2
    return z ^ (z >> np.uint64(31))


def stream_id(label):
    """The first 8 bytes of BLAKE2b(label), little-endian, top bit dropped."""
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(),
                          "little") >> 1


def key(label, call, run_seed):
    """The Philox key of call ``call`` (0, 1, ...) of the layer named ``label`` in a run
    whose ``torch.manual_seed`` was ``run_seed``."""
    z = splitmix64(np.uint64(run_seed % (1 << 64)))
    z = splitmix64(z ^ np.uint64(stream_id(label)))
    return int(splitmix64(z ^ np.uint64(call)))


def recomputed_key(label, r, run_seed):
    """The key of a checkpoint's r-th recomputed call of the layer (call 2^63 + r)."""
    return key(label, (1 << 63) + r, run_seed)
