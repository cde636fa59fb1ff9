"""The demo GPT with planted massive activations: a model where precision matters.

Large language models carry a few fixed channels whose activations are 100-1000x the
median ("massive activations", Sun et al. 2024; the outlier features of LLM.int8()).
A 1x16 NVFP4 block holding one such value gets a scale set by it, and the block's other
15 values round to zero. The demo GPT has none, so no precision plan can be told apart
from another on it (experiments/planner/README.md, section 1). This module plants them:

- at the input of each named linear layer, ``per_block`` channels of every 16-channel
  block are multiplied by ``magnitude`` by a fixed buffer after the layer's norm
  (``PlantedNorm``); the layer's weight columns that read those channels are divided by
  ``magnitude``, so at initialisation the high-precision function is unchanged (up to
  FP32 rounding; ``tests/planner/test_planted.py`` checks it).
- The layer's input X (fprop, and wgrad's X^T) then holds the outliers, and W holds the
  matching tiny columns, which W's 16x16 NVFP4 blocks also flush (fprop and dgrad).
- Those divided columns, and the norm's gain and bias of the planted channels, are not
  trained (gradient hooks zero their gradients). A trained gain would let NVFP4 training
  shrink the outlier away (it did: the one-layer layout lost its effect); and Adam
  takes steps of about the learning rate whatever a weight's size, so trained columns
  of size 0.02/300 would be overwritten within a few steps and, read through the x300
  channel, would make that channel dominate the layer: the high-precision training
  would no longer be the demo's. Frozen, each planted channel adds a fixed feature
  whose value is the initial one (AdamW's decoupled weight decay still shrinks those
  columns, by about 2.5% over the 150 steps of the cpu preset), and the rest of the
  layer trains as before.

Only inputs that come straight from a block's norm can be planted: ``attn.qkv`` (after
``ln1``) and ``mlp.fc`` (after ``ln2``). The layouts below are the issue's three: one
layer, several layers at different depths, and the attention input.
"""

import dataclasses

import torch
from torch import nn

from lowprec.demo.train import build_model

# The norm whose output is each plantable layer's whole input.
NORM_BEFORE = {"attn.qkv": "ln1", "mlp.fc": "ln2"}
BLOCK = 16          # NVFP4's block length along K (NUMERICS 2)


@dataclasses.dataclass(frozen=True)
class Planting:
    """Which layers get outlier input channels, how many per 16-block, and how large."""

    layers: tuple           # e.g. ("blocks.1.mlp.fc",)
    magnitude: float = 300.0
    per_block: int = 1

    def __post_init__(self):
        if not self.layers:
            raise ValueError("a Planting needs at least one layer")
        for name in self.layers:
            _split(name)
        if not (self.magnitude > 0 and self.magnitude == self.magnitude):
            raise ValueError(f"magnitude must be a positive number; got {self.magnitude!r}")
        if not 1 <= self.per_block <= BLOCK:
            raise ValueError(f"per_block must be in 1..{BLOCK}; got {self.per_block}")

    def channels(self, width):
        """The planted channel indices of a ``width``-wide input: ``per_block`` evenly
        spaced offsets (starting at 3) in every 16-channel block."""
        offsets = sorted({(3 + j * BLOCK // self.per_block) % BLOCK
                          for j in range(self.per_block)})
        return [b + o for b in range(0, width, BLOCK) for o in offsets]


def _split(name):
    """``"blocks.<i>.<attn.qkv|mlp.fc>"`` -> (i, layer path within the block)."""
    parts = name.split(".")
    path = ".".join(parts[2:])
    if len(parts) != 4 or parts[0] != "blocks" or not parts[1].isdigit() \
            or path not in NORM_BEFORE:
        raise ValueError(f"cannot plant outliers at {name!r}: only a block's "
                         f"{' or '.join(NORM_BEFORE)} (after its norm), e.g. "
                         f"'blocks.1.mlp.fc'")
    return int(parts[1]), path


# The three layouts, on the 4-block experiment preset (d_model 32: 2 blocks of
# 16 channels at mlp.fc's and attn.qkv's input).
LAYOUTS = {
    "mlp1": Planting(("blocks.1.mlp.fc",)),
    "depths": Planting(("blocks.0.mlp.fc", "blocks.2.mlp.fc", "blocks.3.attn.qkv")),
    "attn": Planting(("blocks.1.attn.qkv",)),
}


class PlantedNorm(nn.Module):
    """A norm whose output channels are multiplied by a fixed (not trained) scale."""

    def __init__(self, norm, scale):
        super().__init__()
        self.norm = norm
        self.register_buffer("scale", scale)

    def forward(self, x):
        return self.norm(x) * self.scale


@torch.no_grad()
def plant(model, planting):
    """Plant ``planting`` into the demo GPT ``model`` in place and return it. Draws no
    random numbers, so the planted and the plain model of a seed share every weight
    except the divided columns."""
    for name in planting.layers:
        index, path = _split(name)
        if index >= len(model.blocks):
            raise ValueError(f"cannot plant outliers at {name!r}: the model has "
                             f"{len(model.blocks)} blocks")
        block = model.blocks[index]
        norm_name = NORM_BEFORE[path]
        if isinstance(getattr(block, norm_name), PlantedNorm):
            raise ValueError(f"{name!r} is planted twice")
        linear = block.get_submodule(path)
        width = linear.in_features
        scale = torch.ones(width, dtype=linear.weight.dtype, device=linear.weight.device)
        scale[planting.channels(width)] = planting.magnitude
        linear.weight.div_(scale)
        setattr(block, norm_name, PlantedNorm(getattr(block, norm_name), scale))
    return freeze(model, planting)


def freeze(model, planting):
    """Registers the gradient hooks that keep the planted weight columns and the norm's
    gain and bias on the planted channels untrained, and returns ``model``. ``plant``
    calls it; call it again on a deep copy of a planted model: ``copy.deepcopy`` drops
    tensor hooks."""
    for name in planting.layers:
        index, path = _split(name)
        block = model.blocks[index]
        planted_norm = getattr(block, NORM_BEFORE[path])
        linear = block.get_submodule(path)
        trained = (planted_norm.scale == 1).to(linear.weight.dtype)
        for param in (linear.weight, planted_norm.norm.weight, planted_norm.norm.bias):
            if param is not None:
                param.register_hook(lambda grad, trained=trained: grad * trained)
    return model


def planting_of(preset):
    """The Planting of an experiment preset named ``planted-<layout>``, else None."""
    if not preset.startswith("planted-"):
        return None
    return LAYOUTS[preset.removeprefix("planted-")]


def build(model_cfg, seed, device, planting=None):
    """The demo's model for ``seed`` (``demo.train.build_model``), planted if asked."""
    model = build_model(model_cfg, seed, device)
    return plant(model, planting) if planting is not None else model


def planted_units(planting):
    """The planning units the planting targets: each layer's ``fprop+dgrad`` (X's and
    W's blocks both hold the planted channels along K)."""
    return [f"{name}/fprop+dgrad" for name in planting.layers]
