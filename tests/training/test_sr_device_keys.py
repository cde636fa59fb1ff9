"""Device SR keys (``lowprec.sr_keys_on_device``): the key of each call made by a kernel
and read by the quantize kernel from memory, so that a captured CUDA graph draws a new
key on each replay. The same keys as the host's, checked against the independent
oracle (``sr_oracle``) and against the host-key run's gradients, bit for bit.

No CUDA graph runs here (no GPU): what is checked is every piece a graph replays, on the
CPU. The key kernel runs in Triton's interpreter; the layers' CPU device keys take the
same path to the kernels (a one-element key tensor, read when the kernel runs).
Mutations tried: the key kernel without the recomputed calls' 2^63 (the oracle test
fails); the CPU op reading ``seed`` instead of ``seed_tensor`` (the by-value test fails);
a device key that is not advanced (the layer tests fail).
"""

import copy

import pytest
import torch

import lowprec
from lowprec import reference as R
from lowprec.backends import extension, reference as reference_backend
from lowprec.kernels import backend as triton_backend
from lowprec.kernels import sr_key

from . import sr_oracle
from .test_sr_keys import QKV, Checkpointed

MASK = (1 << 64) - 1


def key_ints(kernel_calls):
    """The key of every SR quantization of dY, as unsigned ints, in the order they ran."""
    return [int(kwargs["seed"].reshape(()).item()) & MASK if isinstance(kwargs["seed"],
            torch.Tensor) else kwargs["seed"]
            for op, kwargs, _ in kernel_calls
            if op == "quantize_row_col" and kwargs["row_stochastic"]]


def test_the_key_kernel_makes_the_oracle_keys():
    label, run_seed = "blocks.3.attn.qkv", 11
    base = lowprec.sr_keys.stream_base(run_seed, sr_oracle.stream_id(label))
    counts = torch.zeros(2, dtype=torch.int64)
    calls = [int(sr_key.next_device_sr_key(counts, base)) & MASK for _ in range(4)]
    recomputed = [int(sr_key.next_device_sr_key(counts, base, recomputed=True)) & MASK
                  for _ in range(2)]
    assert calls == [sr_oracle.key(label, c, run_seed) for c in range(4)]
    assert recomputed == [sr_oracle.recomputed_key(label, r, run_seed) for r in range(2)]
    assert counts.tolist() == [4, 2]


ADAPTERS = {"cpu extension": extension.quantize_row_col,
            "triton (interpreter)": triton_backend.quantize_row_col,
            "reference": reference_backend.quantize_row_col}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
@pytest.mark.parametrize("rowwise,columnwise", [(True, True), (True, False), (False, True)])
def test_a_key_in_memory_gives_the_bits_of_the_key_by_value(adapter, rowwise, columnwise):
    quantize = ADAPTERS[adapter]
    x = torch.randn(40, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    key = 0xF00DFACE12345678 | (1 << 63)                # the top bit set: uint64 bits
    kwargs = dict(rht_signs=R.DEFAULT_SIGN_VECTOR, rowwise=rowwise, columnwise=columnwise,
                  row_stochastic=True, col_stochastic=True, row_offset=0, col_offset=640)
    by_value = quantize(x, seed=key, **kwargs)
    in_memory = quantize(x, seed=torch.tensor([key - (1 << 64)]), **kwargs)
    other_key = quantize(x, seed=key ^ 1, **kwargs)

    def bits(copies):
        return [t.reshape(-1).view(torch.uint8) for c in copies if c is not None for t in c]
    assert all(torch.equal(w, g) for w, g in zip(bits(by_value), bits(in_memory)))
    # The key matters (so the comparison above can fail): another key, other codes.
    assert not all(torch.equal(w, g) for w, g in zip(bits(by_value), bits(other_key)))


def test_the_op_refuses_a_malformed_key_tensor():
    x = torch.randn(16, 32)
    args = (x, -1, True, False, True, False, 0, 0, 0, None, None, 0, False, False)
    with pytest.raises(ValueError, match="seed_tensor must be one int64 element; got "
                                         "dtype Float"):
        torch.ops.lowprec_C.quantize_row_col(*args, torch.zeros(1))
    with pytest.raises(ValueError, match="with 2 elements"):
        torch.ops.lowprec_C.quantize_row_col(*args, torch.zeros(2, dtype=torch.int64))


def train_steps(model, steps, seed, width=32):
    torch.manual_seed(seed)
    grads = []
    for _ in range(steps):
        x = torch.randn(8, width, requires_grad=True)
        model(x).sum().backward()
        grads.append(x.grad)
    return grads


def test_device_keys_are_the_host_keys(kernel_calls):
    layer = lowprec.Linear(32, 16)
    layer.lowprec_name = "blocks.0.mlp.fc"
    device_layer = copy.deepcopy(layer)
    host = train_steps(layer, 3, seed=7)
    kernel_calls.clear()
    torch.manual_seed(7)
    lowprec.sr_keys_on_device(device_layer, "cpu")
    device = train_steps(device_layer, 3, seed=7)
    seeds = [kwargs["seed"] for op, kwargs, _ in kernel_calls if op == "quantize_row_col"
             and kwargs["row_stochastic"]]
    assert all(isinstance(s, torch.Tensor) and s.shape == (1,) for s in seeds)
    assert key_ints(kernel_calls) == [sr_oracle.key("blocks.0.mlp.fc", c, 7)
                                      for c in range(3)]
    for a, b in zip(host, device):
        assert torch.equal(a, b)
    assert torch.equal(layer.weight.grad, device_layer.weight.grad)
    assert lowprec.sr_state_dict(device_layer) == lowprec.sr_state_dict(layer)


def test_compiled_with_device_keys_equals_eager_with_host_keys(kernel_calls):
    """The compiled graph takes its keys from ``lowprec::next_device_sr_key``."""
    grads = {}
    for label, on_device, compiled in (("host eager", False, False),
                                       ("device compiled", True, True)):
        model = lowprec.convert(QKV("vkq"))
        torch.manual_seed(3)
        if on_device:
            lowprec.sr_keys_on_device(model, "cpu")
        step = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
        torch._dynamo.reset()
        kernel_calls.clear()
        x = torch.randn(16, 32, requires_grad=True)
        step(x).sum().backward()
        grads[label] = {name: getattr(model, name).weight.grad for name in "qkv"}
        assert sorted(key_ints(kernel_calls)) == sorted(sr_oracle.key(n, 0, 3) for n in "qkv")
    torch._dynamo.reset()
    for name in "qkv":
        assert torch.equal(grads["host eager"][name], grads["device compiled"][name])


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpointing_with_device_keys(reentrant, kernel_calls):
    model = lowprec.convert(Checkpointed(reentrant=reentrant))
    torch.manual_seed(9)
    lowprec.sr_keys_on_device(model, "cpu")
    for _ in range(2):
        model(torch.randn(8, 32, requires_grad=True)).sum().backward()
    if reentrant:
        want = [sr_oracle.recomputed_key(n, r, 9) for n in ("fc1", "fc2") for r in range(2)]
    else:
        want = [sr_oracle.key(n, c, 9) for n in ("fc1", "fc2") for c in range(2)]
    assert sorted(key_ints(kernel_calls)) == sorted(want)


def test_the_counts_move_with_the_keys():
    layer = lowprec.Linear(32, 16)
    layer.lowprec_name = "fc"
    lowprec.sr_keys_on_device(layer, "cpu")
    train_steps(layer, 2, seed=1)
    assert lowprec.sr_state_dict(layer)["fc"]["calls"] == 2         # read from the device
    lowprec.load_sr_state_dict(layer, {"fc": {"label": "fc", "calls": 5, "recomputed": 0}})
    stream = layer.sr_streams()[0]
    assert stream.device_counts.tolist() == [5, 0]
    lowprec.sr_keys_on_host(layer)
    assert stream.device_counts is None and stream.state()["calls"] == 5
    assert "on cpu" not in repr(stream)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_captured_cuda_graph_draws_the_eager_keys():
    """The point of device keys: a converted layer's forward + backward captured once in
    a CUDA graph and replayed three times computes the input gradients of three eager
    steps with host keys, bit for bit (with keys passed by value every replay would
    repeat the captured step's key)."""
    torch.manual_seed(0)
    eager = lowprec.Linear(256, 128).cuda()
    eager.lowprec_name = "fc"
    graphed = copy.deepcopy(eager)
    x = torch.randn(64, 256, device="cuda")
    torch.manual_seed(4)
    want = []
    for _ in range(3):
        xi = x.clone().requires_grad_()
        eager(xi).sum().backward()
        want.append(xi.grad)

    torch.manual_seed(4)
    lowprec.sr_keys_on_device(graphed, "cuda")
    static_x = x.clone().requires_grad_()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):          # warm-up outside the capture (kernel compiles)
        graphed(static_x).sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    lowprec.load_sr_state_dict(graphed, {"fc": {"label": "fc", "calls": 0,
                                                "recomputed": 0}})
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed(static_x).sum().backward()
    # The capture itself advanced nothing: its kernels ran only as recorded work.
    got = []
    for _ in range(3):
        graph.replay()
        got.append(static_x.grad.clone())
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    assert lowprec.sr_state_dict(graphed)["fc"]["calls"] == 3
