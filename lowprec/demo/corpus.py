"""The demo's training text: bytes shipped with Python itself, so nothing is downloaded.

The first choice is ``pydoc_data.topics.topics``: the language reference topics that
``help("if")`` prints, about 0.5 MB of English prose and code (in CPython 3.10, 3.11,
3.12 and 3.13: 460, 466, 494 and 512 KB). Some distributions strip ``pydoc_data``; then
the source files of a fixed list of pure-Python standard library modules stand in.
Either way the text depends on the Python version, so a run records the corpus's name,
size and SHA-256 beside its losses (and its losses differ between Python versions).

Tokens are bytes (vocabulary 256): no tokenizer, nothing to download.
"""

import hashlib
import importlib
from pathlib import Path

import torch

VOCAB_SIZE = 256
VAL_FRACTION = 0.1

# Fallback corpus: large pure-Python stdlib modules present in every CPython.
FALLBACK_MODULES = ("argparse", "textwrap", "difflib", "inspect", "pathlib", "typing",
                    "dataclasses", "fractions", "statistics", "calendar")


class Corpus:
    """A byte corpus split once, deterministically: the first 90% trains, the rest
    validates (contiguous, so no validation window overlaps a training one)."""

    def __init__(self, name, data, val_fraction=VAL_FRACTION):
        if data.dim() != 1 or data.dtype != torch.uint8:
            raise ValueError(f"corpus data must be a 1-D uint8 tensor; got {data.dtype} "
                             f"shape {tuple(data.shape)}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
        self.name = name
        self.sha256 = hashlib.sha256(data.numpy().tobytes()).hexdigest()
        cut = int(len(data) * (1.0 - val_fraction))
        self.train, self.val = data[:cut], data[cut:]

    def describe(self):
        return {"name": self.name, "bytes": len(self.train) + len(self.val),
                "train_bytes": len(self.train), "val_bytes": len(self.val),
                "sha256": self.sha256}

    def train_batches(self, batch_size, seq_len, seed):
        """Endless ``(x, y)`` pairs of ``[batch_size, seq_len]`` int64 windows at random
        offsets drawn from a private generator (the same stream for every config)."""
        _check_fits(self.train, seq_len, "training")
        gen = torch.Generator().manual_seed(seed)
        while True:
            starts = torch.randint(len(self.train) - seq_len - 1, (batch_size,),
                                   generator=gen)
            yield _windows(self.train, starts, seq_len)

    def val_batches(self, batch_size, seq_len, n_batches):
        """``n_batches`` fixed ``(x, y)`` pairs of evenly spaced validation windows."""
        _check_fits(self.val, seq_len, "validation")
        count = batch_size * n_batches
        starts = torch.linspace(0, len(self.val) - seq_len - 2, count).long()
        return [_windows(self.val, chunk, seq_len) for chunk in starts.split(batch_size)]


def _check_fits(data, seq_len, what):
    if len(data) < seq_len + 2:
        raise ValueError(f"the {what} split has {len(data)} bytes; seq_len={seq_len} "
                         f"needs at least {seq_len + 2}")


def _windows(data, starts, seq_len):
    idx = starts[:, None] + torch.arange(seq_len + 1)
    tokens = data[idx].long()
    return tokens[:, :-1], tokens[:, 1:]


def _text_bytes():
    """(name, bytes) of the best text this Python ships."""
    try:
        from pydoc_data.topics import topics
        text = "\n\n".join(topics[key] for key in sorted(topics))
        return "pydoc_data.topics", text.encode("utf-8")
    except ImportError:
        pass
    parts = []
    for module_name in FALLBACK_MODULES:
        path = getattr(importlib.import_module(module_name), "__file__", None)
        if path and path.endswith(".py"):
            parts.append(Path(path).read_bytes())
    if not parts:
        raise RuntimeError("no embedded corpus: pydoc_data is missing and the standard "
                           f"library sources of {FALLBACK_MODULES} are not on disk")
    return "stdlib sources (" + ", ".join(FALLBACK_MODULES) + ")", b"\n\n".join(parts)


def load(max_bytes=None):
    """The embedded corpus, optionally cut to its first ``max_bytes`` (for quick runs)."""
    name, raw = _text_bytes()
    if max_bytes is not None:
        raw = raw[:max_bytes]
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return Corpus(name, data)
