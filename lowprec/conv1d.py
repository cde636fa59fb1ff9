"""``Conv1D``: the GPT-2 family's transposed linear layer with each GEMM as a recipe says.

Hugging Face's ``transformers.pytorch_utils.Conv1D`` computes ``y = x @ W + b`` with
``W [K, N]`` (``nx`` inputs, ``nf`` outputs): a linear layer whose weight is stored
transposed. Its quantized form runs ``lowprec.linear(x, W^T, b)``, so the numerics are
exactly those of ``lowprec.Linear`` on the weight ``W^T [N, K]``: the NVFP4 blocks run
along the contraction dim K, the 16x16 weight tiles are the tiles of ``W^T`` (the same
elements as the tiles of ``W``), and the gradient reaches ``W`` through the transpose.
Nothing is copied: ``W^T`` is a view.

The module keeps the Parameters ``weight [K, N]`` and ``bias [N]`` under the same names,
so its state_dict is the original's; the recipe is a plain attribute. With a recipe that
quantizes nothing it computes exactly what the original does (``torch.addmm``).
"""

import sys

import torch
from torch import nn

from lowprec.linear_layer import RecipeMixin, linear_forward


def hf_conv1d_class():
    """``transformers.pytorch_utils.Conv1D`` if transformers has loaded it, else None.

    A model holding such a layer has imported that module, so this never imports
    transformers itself (which is slow and optional).
    """
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def is_hf_conv1d(module):
    cls = hf_conv1d_class()
    return cls is not None and type(module) is cls


def is_conv1d(module):
    """A Conv1D, converted or not (its weight is stored ``[K, N]``)."""
    return isinstance(module, Conv1D) or is_hf_conv1d(module)


def linear_view(module, tensor):
    """``tensor`` laid out like ``module``'s weight, seen as a linear weight ``[N, K]``.

    A Conv1D stores its weight (and the optimizer its moments) as ``[K, N]``.
    """
    return tensor.t() if is_conv1d(module) else tensor


def linear_weight(module):
    """The ``[N, K]`` weight of an ``nn.Linear`` or a Conv1D (a view, not a copy)."""
    return linear_view(module, module.weight)


class Conv1D(RecipeMixin, nn.Module):
    """A converted ``transformers`` Conv1D: ``y = x @ weight + bias`` as ``recipe`` says.

    ``lowprec_name`` names the layer in error messages. ``to_original()`` gives back a
    module of the class it was converted from, holding the same Parameter objects.
    """

    def __init__(self, original, recipe=None):
        super().__init__()
        self.nf, self.nx = original.nf, original.nx
        if tuple(original.weight.shape) != (self.nx, self.nf):
            raise ValueError(f"Conv1D weight must be [nx={self.nx}, nf={self.nf}]; got "
                             f"{tuple(original.weight.shape)}")
        self.weight = original.weight
        self.bias = original.bias
        self.original_class = type(original)
        self.lowprec_name = None
        self.train(original.training)
        self.recipe = recipe

    @property
    def linear_shape(self):
        """``(N, K)``: the shape of the linear weight this layer multiplies by."""
        return (self.nf, self.nx)

    def _unnamed_label(self):
        return f"Conv1D(nf={self.nf}, nx={self.nx})"

    def to_original(self):
        """A module of the original class holding the same Parameter objects."""
        with torch.device("meta"):
            plain = self.original_class(self.nf, self.nx)
        plain.weight = self.weight
        plain.bias = self.bias
        plain.train(self.training)
        return plain

    def forward(self, x):
        if not self.recipe.quantized:
            size_out = x.shape[:-1] + (self.nf,)
            return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)
        return linear_forward(x, self.weight.t(), self.bias, self._layer_config,
                              self.lowprec_name, self._sr_stream, self._weight_copies)

    def extra_repr(self):
        return f"nf={self.nf}, nx={self.nx}, recipe={self.recipe}"
