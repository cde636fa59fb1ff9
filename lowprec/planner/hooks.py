"""Forward hooks that record what each candidate layer computes on a calibration batch.

In the clean pass a hook keeps each call's input and output (the output as a tap whose
gradient ``output_grads`` takes); in the noise pass it adds the curvature probe to the
output first (``rng.noise``, the same bits the statistics recompute with ``delta``). A
``lowprec.Linear`` or a group of experts is recomputed in high precision, so that the
statistics do not depend on the current plan.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from lowprec.conv1d import linear_weight
from lowprec.moe import experts_forward
from lowprec.planner.rng import mix_seed, noise


@dataclass
class MeasuredLayer:
    """One candidate layer while statistics are gathered, and its calls this batch."""

    index: int
    name: str
    module: nn.Module
    compute: bool                     # False: forced to BF16, count tokens only
    nvfp4_ok: bool
    shape: tuple                      # (N, K) of the linear weight (of one expert)
    tensor: str = None                # experts: the projection's Parameter name
    calls: list = field(default_factory=list)     # per forward call: dict
    sigmas: list = field(default_factory=list)    # clean-pass sigma of each call


def _rms(y):
    return float(y.detach().float().pow(2).mean().sqrt()) if y.numel() else 0.0


class Hooks:
    """Forward hooks that record each call's input and (tapped) output.

    A context manager: the hooks are registered on entry and removed on exit.
    """

    def __init__(self, layers, noise_scale, seed):
        self.layers = layers
        self.noise_scale = noise_scale
        self.seed = seed
        self.mode = "clean"
        self.batch = 0
        self.handles = []

    def __enter__(self):
        experts = {}
        for layer in self.layers:
            if layer.tensor is None:
                self.handles.append(layer.module.register_forward_hook(self._hook(layer)))
            else:
                experts.setdefault(id(layer.module), (layer.module, {}))[1][layer.tensor] = layer
        for module, by_tensor in experts.values():
            self.handles.append(module.register_forward_hook(
                self._experts_hook(by_tensor), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
        return False

    def start(self, mode, batch):
        """Begin the ``"clean"`` or ``"noisy"`` pass of calibration batch ``batch``."""
        self.mode, self.batch = mode, batch
        for layer in self.layers:
            layer.calls = []
            if mode == "clean":
                layer.sigmas = []

    def delta(self, layer, call_index, like):
        """The noise the noise pass adds to call ``call_index`` of ``layer`` (same bits)."""
        return noise(like.shape, layer.sigmas[call_index],
                     mix_seed(self.seed, self.batch, layer.index, call_index),
                     like.device, like.dtype)

    def _record(self, layer, x, output, tokens, counts=None):
        """Record one call of ``layer``; returns the output to go on with (the noise
        pass adds the probe). ``counts``: rows per expert, for experts."""
        if not layer.compute:                 # forced to BF16: only its tokens count
            layer.calls.append({"tokens": tokens})
            return output
        call = len(layer.calls)
        record = {"x": x.detach(), "tokens": tokens, "counts": counts}
        if self.mode == "clean":
            sigma = self.noise_scale * _rms(output)
            layer.sigmas.append(sigma)
            record["tap"] = output
        else:
            if call >= len(layer.sigmas):
                raise RuntimeError(f"layer {layer.name} ran more often in the noise pass "
                                   f"than in the clean pass; the model's forward must "
                                   f"be deterministic for the planner's statistics")
            delta = self.delta(layer, call, output)
            output = output + delta
            record["tap"] = output
            record["delta"] = delta
        layer.calls.append(record)
        return output

    def _hook(self, layer):
        def hook(module, inputs, output):
            x = inputs[0]
            weight = linear_weight(module)
            if layer.compute and type(module) is not nn.Linear:
                # A lowprec.Linear (or other subclass) runs its current plan; statistics
                # are about the high-precision layer, so recompute it in full precision.
                output = F.linear(x, weight, module.bias)
            return self._record(layer, x, output, x.numel() // weight.shape[1])
        return hook

    def _experts_hook(self, by_tensor):
        """Recompute an experts layer in high precision, recording each projection.

        A projection is one call over all T x top_k routed rows (sorted by expert), so
        its output has the same shape in the clean and the noise pass even if the probe
        changes the routing downstream.
        """
        def hook(module, args, kwargs, output):
            names = ("hidden_states", "top_k_index", "top_k_weights")
            inputs = list(args) + [kwargs[n] for n in names[len(args):] if n in kwargs]

            def project(tensor, x, sizes):
                weight = getattr(module, tensor)
                y = torch.cat([F.linear(rows, w)
                               for rows, w in zip(x.split(sizes), weight.unbind(0))])
                return self._record(by_tensor[tensor], x, y, x.shape[0], sizes)
            return experts_forward(module, *inputs[:3], project)
        return hook


def output_grads(loss, layers):
    """Store ``dL/dY`` of every recorded call as ``call["g"]`` (and drop the taps)."""
    taps = [(layer, call) for layer in layers for call in layer.calls if "tap" in call]
    for layer, call in taps:
        if not call["tap"].requires_grad:
            raise ValueError(f"the output of layer {layer.name} does not require grad (frozen "
                             f"weights and input?); leave it out of the candidates")
    if not taps:
        return
    grads = torch.autograd.grad(loss, [call["tap"] for _, call in taps], allow_unused=True)
    for (layer, call), grad in zip(taps, grads):
        call["g"] = torch.zeros_like(call["tap"]) if grad is None else grad.detach()
        del call["tap"]                  # drop the graph reference early
