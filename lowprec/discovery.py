"""Which modules of a model are weight matmuls, found once per ``convert`` call.

``find_layers(model, filter_fn)`` lists every weight matmul (``weight_matmuls``) and the
repeated block lists (``find_block_lists``); ``lowprec.policy`` turns that into a plan,
``lowprec.module_swap`` applies it, and the planner measures its candidates
(``FoundLayers.candidates``). This module imports nothing of those, so every import in
the package sits at module top and the import graph has no cycle.

Which modules (``weight_matmuls``): every module that multiplies by a weight it owns is
listed in the plan, under its qualified name, with its precisions or the reason it is
untouched. Converted are

* ``nn.Linear`` (exactly that type) -> ``lowprec.Linear``;
* ``transformers``' ``Conv1D`` (GPT-2 family, weight ``[K, N]``) -> ``lowprec.conv1d.Conv1D``
  with the same numerics (the blocks run along the contraction K);
* groups of experts (3-D expert weights in a layout an adapter of ``lowprec.moe``
  recognises) -> ``lowprec.moe.GroupedExperts``; each projection (``gate_up_proj``,
  ``down_proj``) is one plan entry covering all E experts (one precision choice for all
  experts of a layer), with top_k x N x K multiply-adds per token.

Untouched, listed with the reason: MoE routers (kept BF16 on purpose, see
``lowprec.moe``; a router that is an ``nn.Linear`` is converted but forced BF16 with the
same reason), subclasses of ``nn.Linear`` (their forward may do something else;
``nn.MultiheadAttention``'s ``out_proj`` is one, and MHA never calls its forward), and
any other module owning a 2-D or larger weight (``nn.MultiheadAttention``'s in_proj,
convolutions, expert weights in an unknown layout). ``convert`` warns once, listing
these, except the routers. Embeddings are lookups, not matmuls, and are not listed; a
linear layer whose weight is an embedding's (a tied LM head) is one entry, and its
reason names the embedding.

Block lists are the ``nn.ModuleList`` or ``nn.Sequential`` whose children (at least one)
are all of one class, each a composite module holding a converted kind of layer (so a
Sequential of bare Linears is not a block list), and which lie in no other block list:
every such list counts (encoder and decoder, vision and text towers), a list of experts
inside a block does not.

A layer whose K or N is not a multiple of 16 must stay BF16 with that reason, and so
does a layer for which ``filter_fn(module, fqn)`` is False (reason ``"filtered"``). The
filter takes the module first and its qualified name second, torchao's order
(``module_filter_fn(module, fqn)``), so a torchao user's filter works as written; a
filter that fails on that order (TypeError, AttributeError) or returns anything but a
bool is refused, naming the layer (``keep_layer``).
"""

import dataclasses

import numpy
import torch
from torch import nn

from lowprec.conv1d import Conv1D, is_conv1d
from lowprec.linear_layer import Linear
from lowprec.moe import (
    ROUTER_REASON,
    experts_adapter,
    find_top_k,
    has_expert_weights,
    is_router,
)
from lowprec.names import shape_problem

CONVERTED_KINDS = ("linear", "conv1d", "experts")


@dataclasses.dataclass
class WeightMatmul:
    """One weight a model multiplies by, as ``convert`` sees it.

    ``name``: the plan name; ``module``: the module holding the weight; ``kind``: one of
    ``lowprec.plan.KINDS``; ``shape``: the linear weight's (N, K) (one expert's);
    ``reason``: why it must stay BF16 (forced or untouched), else None; ``experts``:
    ``[E, top_k]`` for experts; ``warn``: an untouched module ``convert`` warns about;
    ``tied_to``: the embedding whose weight a linear layer shares (a tied LM head).
    """

    name: str
    module: nn.Module
    kind: str
    shape: tuple
    reason: str | None = None
    experts: list | None = None
    warn: bool = False
    tied_to: str | None = None

    @property
    def macs_per_token(self):
        return self.shape[0] * self.shape[1] * (self.experts[1] if self.experts else 1)


def is_linear(module):
    """An ``nn.Linear`` (exactly that type) or a ``lowprec.Linear``."""
    return type(module) is nn.Linear or isinstance(module, Linear)


def _is_converted_kind(module):
    return is_linear(module) or is_conv1d(module) or experts_adapter(module) is not None


def _embedding_names(model):
    """``{id(weight): embedding name}`` of every embedding's weight."""
    return {id(m.weight): name for name, m in model.named_modules()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}


def _parent(model, name):
    return model.get_submodule(name.rsplit(".", 1)[0] if "." in name else "")


def _experts_entries(model, name, module, filter_fn):
    adapter = experts_adapter(module)
    top_k = find_top_k(_parent(model, name)) if name else None
    if adapter is None or top_k is None:
        why = ("expert weights in a layout no lowprec.moe adapter knows" if adapter is None
               else "experts whose top_k (on the MoE block or its router) is unknown")
        return [_untouched(name, module, f"untouched: {why}", warn=True)]
    out = []
    for tensor in adapter.tensors:
        weight = getattr(module, tensor)
        e, n, k = weight.shape
        full = f"{name}.{tensor}"
        reason = shape_problem(n, k)
        if reason is None and not keep_layer(filter_fn, module, full):
            reason = "filtered"
        out.append(WeightMatmul(full, module, "experts", (n, k), reason, [e, top_k]))
    return out


FILTER_SIGNATURE = "filter_fn(module, fqn) -> bool"


def _is_bool(value):
    return isinstance(value, (bool, numpy.bool_))


def keep_layer(filter_fn, module, fqn):
    """``filter_fn(module, fqn)``, checked: True keeps the layer eligible for low precision.

    A filter written for the other argument order, ``(name, module)``, shows itself by
    failing on a string method or operator applied to the module (TypeError,
    AttributeError) or by returning something that is not a bool; both are refused
    here rather than read as "keep BF16", which used to make every layer BF16 silently.

    Raises:
        TypeError: naming the layer, what the filter raised or returned, and the
        signature lowprec calls (``FILTER_SIGNATURE``).
    """
    if filter_fn is None:
        return True
    where = f"on layer {fqn!r} ({type(module).__name__})"
    try:
        keep = filter_fn(module, fqn)
    except (TypeError, AttributeError) as err:
        raise TypeError(f"filter_fn raised {type(err).__name__}: {err} {where}; lowprec "
                        f"calls {FILTER_SIGNATURE} (torchao's order: the module first, its "
                        f"qualified name second): a filter written as filter_fn(name, "
                        f"module) must swap its arguments") from err
    if not _is_bool(keep):
        raise TypeError(f"filter_fn returned {keep!r} ({type(keep).__name__}) {where}; it "
                        f"must return a bool: lowprec calls {FILTER_SIGNATURE} (torchao's "
                        f"order; a filter written as filter_fn(name, module) must swap its "
                        f"arguments)")
    return bool(keep)


def _untouched(name, module, reason, warn):
    weights = [p for p in module.parameters(recurse=False) if p.dim() >= 2]
    n = sum(p.shape[0] for p in weights)
    k = weights[0][0].numel() if weights else 0
    return WeightMatmul(name, module, "untouched", (n, k), reason, warn=warn)


def _is_linear_router(model, name, n_out):
    """A linear router (older MoE layouts): its parent holds ``experts``, and it scores
    each of them (N = the number of experts)."""
    if not name:
        return False
    experts = getattr(_parent(model, name), "experts", None)
    if isinstance(experts, nn.ModuleList):
        return n_out == len(experts)
    weight = getattr(experts, "gate_up_proj", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 3 and n_out == weight.shape[0]


def weight_matmuls(model, filter_fn=None):
    """Every weight matmul of ``model`` in model order, as ``WeightMatmul`` entries.

    See the module docstring for what is converted and what is untouched. An untouched
    module with several 2-D weights (MHA's q/k/v) is one entry whose N sums them.
    """
    embeddings = _embedding_names(model)
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            continue
        if is_linear(module) or is_conv1d(module):
            kind = "linear" if is_linear(module) else "conv1d"
            n, k = module_shape(module)
            reason = ROUTER_REASON if _is_linear_router(model, name, n) else shape_problem(n, k)
            if reason is None and not keep_layer(filter_fn, module, name):
                reason = "filtered"
            entry = WeightMatmul(name, module, kind, (n, k), reason)
            if id(module.weight) in embeddings:
                entry.tied_to = embeddings[id(module.weight)]
            out.append(entry)
        elif isinstance(module, nn.Linear):
            out.append(_untouched(name, module, f"untouched: {type(module).__name__} is a "
                                  f"subclass of nn.Linear (its forward may differ)", True))
        elif has_expert_weights(module):
            out.extend(_experts_entries(model, name, module, filter_fn))
        elif any(p.dim() >= 2 for p in module.parameters(recurse=False)):
            if is_router(module):
                out.append(_untouched(name, module, ROUTER_REASON, warn=False))
            else:
                out.append(_untouched(name, module, f"untouched: lowprec does not convert "
                                      f"{type(module).__name__}", warn=True))
    return out


@dataclasses.dataclass
class FoundLayers:
    """What ``find_layers`` found in a model: its weight matmuls (``WeightMatmul``, model
    order) and its block lists (``[(name, container)]``, ``find_block_lists``)."""

    matmuls: list
    block_lists: list

    def candidates(self):
        """The layers a plan can quantize (``candidate_layers``)."""
        return _candidates(self.matmuls)


def find_layers(model, filter_fn=None):
    """The weight matmuls and block lists of ``model`` (``filter_fn``: the module
    docstring), found once, for the plan, the planner and the warnings of one call."""
    return FoundLayers(weight_matmuls(model, filter_fn), find_block_lists(model))


def candidate_layers(model, filter_fn=None):
    """The layers a plan can quantize (linear, Conv1D, expert projections), model order.

    Returns:
        list of ``(name, module, forced_reason)``; ``forced_reason`` is None, or why the
        layer must stay BF16 (a shape NVFP4 and FP8 GEMMs cannot take, or ``"filtered"``).
        For an expert projection ``name`` is ``<experts module>.<tensor>`` and
        ``module`` the experts module.
    """
    return _candidates(weight_matmuls(model, filter_fn))


def _candidates(matmuls):
    return [(e.name, e.module, e.reason) for e in matmuls if e.kind in CONVERTED_KINDS]


def candidate_weight(name, module):
    """The weight of a candidate layer (an expert projection: ``<experts>.<tensor>``)."""
    if experts_adapter(module) is None:
        return module.weight
    return getattr(module, name.rpartition(".")[2])


def _is_block_list(module):
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
        return False
    if len({type(child) for child in module}) != 1:
        return False
    return all(not is_linear(child) and not is_conv1d(child)
               and any(_is_converted_kind(m) for m in child.modules())
               for child in module)


def find_block_lists(model):
    """``[(name, container)]`` of every block list in no other one (module docstring)."""
    found = []
    for name, module in model.named_modules():            # outer lists come first
        inside = any(outer == "" or name.startswith(f"{outer}.") for outer, _ in found)
        if not inside and _is_block_list(module):
            found.append((name, module))
    return found


def module_shape(module, tensor=None):
    """``(N, K)`` of the linear weight a module (or one expert of ``tensor``) multiplies by."""
    if tensor is not None:
        return tuple(getattr(module, tensor).shape[1:])
    if isinstance(module, Conv1D):
        return module.linear_shape
    if is_conv1d(module):
        return (module.nf, module.nx)
    return tuple(module.weight.shape)


QUANTIZABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_weight_dtype(name, weight, planned=False):
    """Refuse a weight the quantize ops cannot take, at ``convert`` rather than inside
    ``quantize_row_col`` at the first forward (which names neither layer nor fix).

    ``planned``: the layer is a free choice of the planner (it may get a quantized
    recipe), not one a plan gives a quantized recipe.
    """
    if weight.dtype in QUANTIZABLE_DTYPES:
        return
    gets = "may get a quantized recipe from the planner" if planned else \
        "gets a quantized recipe"
    raise ValueError(f"layer {name!r} {gets} but its weight is {weight.dtype}; the "
                     f"quantized GEMMs take float32, bfloat16 or float16: convert the "
                     f"model first with model.float() or model.bfloat16(), or keep this "
                     f"layer BF16 (filter_fn=lambda module, fqn: fqn != {name!r})")
