"""Which Philox key each stochastic-rounding call of a training layer uses.

NUMERICS 4.1 fixes what a key does; this module fixes which key a call gets
(``docs/numerics.md``, "Stochastic-rounding keys"). Each layer owns an ``SRStream``:

    key(call c) = mix(mix(mix(run_seed) ^ stream_id) ^ c)

* ``run_seed``: ``torch.initial_seed()`` (what ``torch.manual_seed`` set), read per call;
* ``stream_id``: 63 bits of BLAKE2b of the layer's name (``lowprec_name``, set by
  ``convert``; a layer built by hand before it is named uses ``unnamed:<i>``, ``i``
  counting the layers built in this process);
* ``c``: the stream's own count of its calls that drew a key, from 0;
* ``mix``: the splitmix64 finalizer (``sr_key``), on 64-bit integers.

A key therefore depends on no other layer: q, k and v (or the experts of an MoE layer)
draw the same keys whichever runs first, so eager and ``torch.compile`` runs draw the
same words. The counts are state that a resumed run must restore
(``lowprec.sr_state_dict(model)`` saved with the checkpoint,
``lowprec.load_sr_state_dict(model, state)`` on resume).

Activation checkpointing: a forward that runs while autograd runs a backward is the
recomputation of a checkpointed region. Its key comes from a second count of the same
stream, as call ``2^63 + r``: with non-reentrant checkpointing the backward uses the key
the original forward drew (autograd keeps that node; only its tensors are recomputed), so
a checkpointed run draws exactly the words of the same run without checkpointing; with
reentrant checkpointing (whose first forward draws nothing) the recomputation's own keys
are used, distinct from every other call's.

The counts live in a 2-element int64 CPU tensor (``[calls, recomputed calls]``): the
eager path reads and writes it through a NumPy view (no op dispatch, no device sync),
and the compiled path through ``lowprec::next_sr_key``, an op that mutates it, so both
advance the same count.

Device keys, for CUDA graphs (``keys_on_device(model, device)``): a graph replays the
launch arguments it captured, so a key passed by value would repeat every replay. With
device keys each stream keeps its counts on the device, a one-thread kernel
(``kernels/sr_key.py``, or ``lowprec::next_device_sr_key`` in a compiled graph)
writes the call's key into a one-element tensor and advances the count, and the
quantize kernel reads the key from that tensor when it runs. The keys are the same as
the host's for the same counts, with one difference: the run seed is read once, when
the keys move to the device (``torch.manual_seed`` after that does not change them;
call ``keys_on_device`` again). On a CPU the "device" is the host: the counts stay a
CPU tensor and the key is handed over as a one-element CPU tensor, which exercises the
same path. ``keys_on_host`` moves the counts back; ``state_dict`` reads them from
wherever they are.
"""

import hashlib
import itertools

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from lowprec import backends
from lowprec.checks import as_int64

MASK64 = (1 << 64) - 1
RECOMPUTED = 1 << 63          # recomputed calls count from here (see the docstring)

_unnamed = itertools.count()


def _mix(z):
    """splitmix64's finalizer: a bijection of 64-bit integers that spreads every bit."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def sr_key(run_seed, stream_id, call):
    """The 64-bit Philox key of call ``call`` of stream ``stream_id`` in run ``run_seed``."""
    return _mix(stream_base(run_seed, stream_id) ^ call)


def stream_id(label):
    """63 bits of BLAKE2b of ``label``: the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(label.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _in_backward():
    # -1 outside a backward pass; a forward inside one is a checkpoint's recomputation.
    return torch._C._current_graph_task_id() != -1


def _advance(counts):
    """Advance ``counts`` (the NumPy view of a stream's counts) and return the call."""
    if _in_backward():
        r = int(counts[1])
        counts[1] = r + 1
        return RECOMPUTED + r
    call = int(counts[0])
    counts[0] = call + 1
    return call


def _take(counts, sid):
    """Advance ``counts`` (the NumPy view of a stream's counts) and return the key."""
    return sr_key(torch.initial_seed(), sid, _advance(counts))


def stream_base(run_seed, sid):
    """``mix(mix(run_seed) ^ stream_id)``: the part of every key of a stream that does
    not depend on the call (``sr_key`` mixes it with the call number)."""
    return _mix(_mix(run_seed & MASK64) ^ sid)


def _device_key(counts, base):
    """The next key of device ``counts`` as an int64 ``[1]`` tensor on their device: on
    a GPU one launch of the key kernel, on a CPU the host's arithmetic."""
    if counts.device.type == "cpu":
        key = _mix(base ^ _advance(counts.numpy()))
        return torch.tensor([as_int64(key)], dtype=torch.int64)
    return backends.device_key_step(counts.device)(counts, base, _in_backward())


class SRStream:
    """The SR keys of one layer (or of one expert's GEMMs): see the module docstring."""

    def __init__(self, label=None):
        self.label = label or f"unnamed:{next(_unnamed)}"
        self.id = stream_id(self.label)
        # A real CPU tensor even where layers are built under a fake or meta mode (the
        # launch trace's): the counts are host state, not a model tensor.
        with unset_fake_temporarily():
            self.counts = torch.zeros(2, dtype=torch.int64, device="cpu")  # [calls, recomputed]
            self._view = self.counts.numpy()
        # Device keys (module docstring): the counts on the device and the stream's base,
        # or None for host keys.
        self.device_counts = self.base = None

    def rename(self, label):
        """Key the stream by ``label`` from now on (the count goes on)."""
        self.label, self.id = label, stream_id(label)
        if self.device_counts is not None:
            self.base = stream_base(self.run_seed, self.id)

    def to_device(self, device):
        """Device keys on ``device`` from now on, from the current counts and run seed."""
        counts = self.device_counts if self.device_counts is not None else self.counts
        with unset_fake_temporarily():
            self.device_counts = counts.to(device, copy=True)
        self.run_seed = torch.initial_seed()
        self.base = stream_base(self.run_seed, self.id)

    def to_host(self):
        """Host keys from now on, the counts taken back from the device."""
        if self.device_counts is not None:
            self._view[:] = self.device_counts.cpu().numpy()
            self.device_counts = self.base = None

    def next_key(self):
        """The next call's key (eager path): an unsigned 64-bit int, or with device keys
        an int64 ``[1]`` tensor on the device that the quantize kernel reads."""
        if self.device_counts is not None:
            return _device_key(self.device_counts, self.base)
        return _take(self._view, self.id)

    def next_key_op(self):
        """The next call's key inside a compiled graph: an int64 0-d CPU tensor from
        ``lowprec::next_sr_key``, or with device keys an int64 ``[1]`` device tensor
        from ``lowprec::next_device_sr_key``."""
        if self.device_counts is not None:
            return next_device_sr_key(self.device_counts, as_int64(self.base))
        return next_sr_key(self.counts, self.id)

    def _host_counts(self):
        if self.device_counts is None:
            return self._view
        return self.device_counts.cpu().numpy()       # a copy: syncs with the device

    def state(self):
        counts = self._host_counts()
        return {"label": self.label, "calls": int(counts[0]), "recomputed": int(counts[1])}

    def load(self, state):
        self._view[0], self._view[1] = state["calls"], state["recomputed"]
        if self.device_counts is not None:
            self.device_counts.copy_(self.counts)

    # Copies (deepcopy, pickle) get their own counts tensor and its view, and host keys.
    def __getstate__(self):
        return self.state()

    def __setstate__(self, state):
        self.__init__(state["label"])
        self.load(state)

    def __repr__(self):
        where = "" if self.device_counts is None else f", on {self.device_counts.device}"
        return f"SRStream({self.label!r}, calls={int(self._host_counts()[0])}{where})"


class NamedStreams:
    """Mixin of a layer whose ``lowprec_name`` (its path in the model, set by ``convert``)
    also keys its SR streams. Subclasses give ``_named_streams()``: ``[(stream, suffix)]``,
    each stream keyed ``name + suffix`` once the layer is named."""

    @property
    def lowprec_name(self):
        return self._lowprec_name

    @lowprec_name.setter
    def lowprec_name(self, name):
        self._lowprec_name = name
        streams = self._named_streams()       # made here if the layer makes them lazily
        if name:
            for stream, suffix in streams:
                stream.rename(name + suffix)

    def sr_streams(self):
        """The layer's SR streams (``streams`` collects them)."""
        return tuple(stream for stream, _ in self._named_streams())


# The stream of calls that name no layer (``lowprec.linear`` without ``sr_stream``): one
# count for all of them, so their keys depend on their order.
FUNCTIONAL = SRStream("lowprec.linear")


@torch.library.custom_op("lowprec::next_sr_key", mutates_args=("counts",))
def next_sr_key(counts: torch.Tensor, sid: int) -> torch.Tensor:
    """``SRStream.next_key`` as an op for compiled graphs: advances ``counts`` (a stream's
    CPU counts tensor) and returns the key as an int64 0-d CPU tensor (the unsigned
    value's bits)."""
    key = _take(counts.numpy(), sid)
    return torch.tensor(key - (1 << 64) if key >> 63 else key, dtype=torch.int64)


@next_sr_key.register_fake
def _next_sr_key_fake(counts, sid):
    return torch.empty((), dtype=torch.int64)


@torch.library.custom_op("lowprec::next_device_sr_key", mutates_args=("counts",))
def next_device_sr_key(counts: torch.Tensor, base: int) -> torch.Tensor:
    """``SRStream.next_key`` with device keys, as an op for compiled graphs: advances the
    stream's device ``counts`` and returns the key as an int64 ``[1]`` tensor on their
    device; ``base``: the stream's base, its uint64 bits as an int64."""
    return _device_key(counts, base & MASK64)


@next_device_sr_key.register_fake
def _next_device_sr_key_fake(counts, base):
    return counts.new_empty(1)


def keys_on_device(module, device):
    """Device keys for every lowprec layer of ``module`` (module docstring): call before
    capturing a CUDA graph of its steps (or compiling with CUDA graphs)."""
    for stream in streams(module).values():
        stream.to_device(device)


def keys_on_host(module):
    """Back to host keys, the counts taken from the device."""
    for stream in streams(module).values():
        stream.to_host()


def streams(module):
    """``{label: SRStream}`` of every lowprec layer in ``module``."""
    found = {}
    for sub in module.modules():
        for stream in getattr(sub, "sr_streams", lambda: ())():
            found[stream.label] = stream
    return found


def state_dict(module):
    """The SR counts of every layer of ``module``: save it with a checkpoint."""
    return {label: stream.state() for label, stream in streams(module).items()}


def load_state_dict(module, state):
    """Restore the counts saved by ``state_dict``; a layer missing on either side is an
    error naming it (a resumed run must not repeat its first steps' words)."""
    found = streams(module)
    missing, unexpected = sorted(set(found) - set(state)), sorted(set(state) - set(found))
    if missing or unexpected:
        raise KeyError(f"lowprec.sr_state.load_state_dict: the saved counts do not match "
                       f"the model's layers (missing: {missing[:5]}, unexpected: "
                       f"{unexpected[:5]})")
    for label, stream in found.items():
        stream.load(state[label])
