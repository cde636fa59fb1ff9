"""Mixture-of-experts layers: find expert modules by structure, run them grouped.

Hugging Face transformers 5.x stores the experts of a MoE layer (Mixtral, Qwen2-MoE,
Qwen3-MoE, ...) as one module with two 3-D Parameters, ``gate_up_proj [E, 2I, H]`` and
``down_proj [E, H, I]``, and calls it as ``experts(hidden [T, H], top_k_index [T, k],
top_k_weights [T, k])``: each token goes through its k experts,
``down(act(gate) * up)``, weighted and summed. The router (``gate``) is a separate
module with a ``[E, H]`` weight.

``GroupedExperts`` is a drop-in replacement holding the very same Parameters (same
names, so the same state_dict): it sorts the routed rows by expert and runs both
projections with ``lowprec.grouped_linear`` (every expert's GEMMs with the full recipe,
see that module), each projection with its own recipe.

Which modules are experts: an adapter in ``EXPERT_ADAPTERS`` recognises them by
structure, not by class name. ``ConcatenatedGateUp`` takes any module whose only
Parameters are those two 3-D tensors with consistent shapes, with an ``act_fn``, and
whose transformers flags (when present) say the default layout: gate and up
concatenated (not interleaved), not transposed, no biases, no post-expert norm, the
default ``act(gate) * up``. Another layout needs another adapter (an object with
``match``, ``tensors`` and ``convert``; see ``ConcatenatedGateUp``), added with
``register_experts_adapter``; a 3-D expert weight no adapter takes is left as it is and
``lowprec.convert`` warns about it.

Routers stay BF16: they make a discrete choice (top-k), and a quantization error that
flips a token's experts changes the layer's output by a whole expert, not by a rounding
error; they are also a negligible share of the FLOPs (E x H per token).
"""

import torch
from torch import nn

from lowprec import sr_keys
from lowprec.grouped import grouped_linear
from lowprec.linear_layer import DEFAULT_RECIPE, check_nvfp4_shape
from lowprec.recipe import Recipe

ROUTER_REASON = ("router: stays BF16 (a quantization error can flip its discrete top-k "
                 "choice, which changes a whole expert's output; E x H MACs per token)")


def _flag(module, name, default):
    return getattr(module, name, default)


class ConcatenatedGateUp:
    """transformers' default expert layout (Mixtral, Qwen2-MoE, Qwen3-MoE, ...)."""

    tensors = ("gate_up_proj", "down_proj")

    @staticmethod
    def match(module):
        """True if ``module`` holds experts in this layout (see the module docstring)."""
        return ConcatenatedGateUp.problem(module) is None

    @staticmethod
    def problem(module):
        """Why ``module`` is not in this layout (a sentence naming the value), or None."""
        params = dict(module.named_parameters(recurse=False))
        if set(params) != set(ConcatenatedGateUp.tensors):
            return (f"its own Parameters must be exactly {ConcatenatedGateUp.tensors}; "
                    f"got {sorted(params)}")
        if not hasattr(module, "act_fn"):
            return "it has no act_fn"
        gate_up, down = params["gate_up_proj"], params["down_proj"]
        if gate_up.dim() != 3 or down.dim() != 3:
            return (f"gate_up_proj and down_proj must be 3-D [E, 2I, H] and [E, H, I]; got "
                    f"{tuple(gate_up.shape)} and {tuple(down.shape)}")
        e, two_i, h = gate_up.shape
        if two_i % 2 or tuple(down.shape) != (e, h, two_i // 2):
            return (f"gate_up_proj {tuple(gate_up.shape)} [E, 2I, H] needs down_proj "
                    f"[E, H, I] = {(e, h, two_i // 2)}; got {tuple(down.shape)}")
        if e == 0:
            return f"it holds no experts (gate_up_proj {tuple(gate_up.shape)})"
        apply_gate = getattr(type(module), "_apply_gate", None)
        if apply_gate is not None and apply_gate.__name__ != "_default_apply_gate":
            return f"its _apply_gate is {apply_gate.__name__}, not the default act(gate) * up"
        flags = {"is_concatenated": True, "has_gate": True, "is_transposed": False,
                 "has_bias": False, "has_post_expert_norm": False}
        for flag, wanted in flags.items():
            value = _flag(module, flag, wanted)
            if bool(value) != wanted:
                return f"{flag}={value!r} (this layout needs {flag}={wanted})"
        return None

    @staticmethod
    def convert(module, recipes):
        return GroupedExperts(module, recipes)


EXPERT_ADAPTERS = [ConcatenatedGateUp]


def register_experts_adapter(adapter):
    """Add an adapter for another expert layout (tried before the built-in ones)."""
    for attr in ("match", "tensors", "convert"):
        if not hasattr(adapter, attr):
            raise TypeError(f"an experts adapter needs .{attr}; {adapter!r} has none")
    EXPERT_ADAPTERS.insert(0, adapter)


def experts_adapter(module):
    """The adapter that handles ``module`` (a ``GroupedExperts`` handles itself), or None."""
    if isinstance(module, GroupedExperts):
        return ConcatenatedGateUp
    return next((a for a in EXPERT_ADAPTERS if a.match(module)), None)


def has_expert_weights(module):
    """True if ``module`` owns a 3-D or larger Parameter (a stack of expert weights)."""
    return any(p.dim() >= 3 for p in module.parameters(recurse=False)) and \
        not isinstance(module, nn.modules.conv._ConvNd)


def find_top_k(parent):
    """The number of experts per token, from the MoE block ``parent`` or its router."""
    for module in (parent, *parent.children()):
        top_k = getattr(module, "top_k", None)
        if isinstance(top_k, int) and top_k > 0:
            return top_k
    return None


def is_router(module):
    """A module choosing experts: an own 2-D ``weight`` and an int ``top_k``."""
    weight = module._parameters.get("weight")
    return weight is not None and weight.dim() == 2 and \
        isinstance(getattr(module, "top_k", None), int)


def route(top_k_index, num_experts):
    """Sort the T x k routed rows by expert.

    Within an expert the rows are in (slot, token) order, the order transformers'
    eager experts loop uses, so a BF16 recipe reproduces it.

    Returns:
        ``(token, slot, counts)``: for each sorted row its token and top-k slot, and the
        number of rows of each expert (``[E]``).
    """
    n_tokens = top_k_index.shape[0]
    flat = top_k_index.t().reshape(-1)                  # row s * T + t
    order = torch.argsort(flat, stable=True)
    # A fixed-size count (bincount's size depends on the data, which breaks compile).
    counts = flat.new_zeros(num_experts).scatter_add_(0, flat, torch.ones_like(flat))
    return order % n_tokens, order // n_tokens, counts


def experts_forward(module, hidden_states, top_k_index, top_k_weights, project):
    """The experts layer's computation with the projections left to ``project``.

    ``project(tensor, x, sizes)`` multiplies the expert-sorted rows ``x`` (``sizes``: a
    list of the E experts' row counts) by the experts of ``module.<tensor>``
    (``"gate_up_proj"``, then ``"down_proj"``). ``GroupedExperts`` passes
    ``grouped_linear``; the planner's statistics pass a high-precision product that
    records its operands. Both projections get the same list: under torch.compile each
    ``tolist()`` makes new symbols, and inductor needs the two splits to share theirs.
    """
    token, slot, counts = route(top_k_index, module.gate_up_proj.shape[0])
    sizes = counts.tolist()
    gate, up = project("gate_up_proj", hidden_states[token], sizes).chunk(2, dim=-1)
    h = project("down_proj", module.act_fn(gate) * up, sizes)
    h = h * top_k_weights[token, slot, None]
    out = torch.zeros_like(hidden_states)
    return out.index_add_(0, token, h.to(out.dtype))


class GroupedExperts(sr_keys.NamedStreams, nn.Module):
    """Drop-in experts module: ``forward(hidden [T, H], top_k_index, top_k_weights)``.

    ``recipes`` maps ``"gate_up_proj"`` and ``"down_proj"`` to a ``lowprec.Recipe`` (one
    per projection, shared by all experts). ``to_original()`` gives back the module it
    was made from, holding the current Parameters.
    """

    def __init__(self, original, recipes=None):
        super().__init__()
        # The adapter's checks, also when built directly: a layout this module does not
        # compute would otherwise fail in forward, or give wrong outputs.
        problem = ConcatenatedGateUp.problem(original)
        if problem is not None:
            raise ValueError(f"GroupedExperts takes experts in transformers' default layout "
                             f"(ConcatenatedGateUp); {type(original).__name__} is not: "
                             f"{problem}")
        self.num_experts, two_i, self.hidden_dim = original.gate_up_proj.shape
        self.intermediate_dim = two_i // 2
        self.gate_up_proj = original.gate_up_proj
        self.down_proj = original.down_proj
        self.act_fn = original.act_fn
        # Kept outside _modules (not a child: no duplicate parameters or state_dict keys).
        self.__dict__["original"] = original
        # One SR stream per projection and expert, keyed by name once convert names the
        # module (lowprec.sr_keys).
        self._sr = {tensor: [sr_keys.SRStream() for _ in range(self.num_experts)]
                    for tensor in ConcatenatedGateUp.tensors}
        self.lowprec_name = None
        self._recipes = {}
        self.train(original.training)
        self.set_recipes(recipes or {})

    def _named_streams(self):
        return [(stream, f".{tensor}[{e}]") for tensor, streams in self._sr.items()
                for e, stream in enumerate(streams)]

    @property
    def recipes(self):
        return dict(self._recipes)

    def set_recipes(self, recipes):
        """Set the recipe of each projection named in ``recipes`` (others: default)."""
        unknown = set(recipes) - set(ConcatenatedGateUp.tensors)
        if unknown:
            raise KeyError(f"GroupedExperts has the projections "
                           f"{ConcatenatedGateUp.tensors}; got {sorted(unknown)}")
        new = {}
        for tensor in ConcatenatedGateUp.tensors:
            recipe = recipes.get(tensor, self._recipes.get(tensor, DEFAULT_RECIPE))
            if not isinstance(recipe, Recipe):
                raise TypeError(f"recipe must be a lowprec.Recipe; got "
                                f"{type(recipe).__name__}")
            weight = getattr(self, tensor)
            check_nvfp4_shape(weight.shape[1:], recipe, self._tensor_name(tensor))
            new[tensor] = recipe
        self._recipes = new

    def _label(self):
        return f"GroupedExperts {self.lowprec_name}" if self.lowprec_name else "GroupedExperts"

    def _tensor_name(self, tensor):
        return f"{self.lowprec_name}.{tensor}" if self.lowprec_name else tensor

    def to_original(self):
        original = self.__dict__["original"]
        original.gate_up_proj = self.gate_up_proj
        original.down_proj = self.down_proj
        original.train(self.training)
        return original

    def forward(self, hidden_states, top_k_index, top_k_weights):
        # Shapes are static (no sync, compile-safe): a routing for other rows would give
        # the tokens it does not cover a silent zero output.
        if hidden_states.dim() != 2 or hidden_states.shape[1] != self.hidden_dim:
            raise ValueError(f"{self._label()}: hidden_states must be [T, H={self.hidden_dim}]"
                             f"; got {tuple(hidden_states.shape)}")
        if top_k_index.dim() != 2 or top_k_index.shape[0] != hidden_states.shape[0]:
            raise ValueError(f"{self._label()}: top_k_index must be [T, k] with T = "
                             f"{hidden_states.shape[0]} rows of hidden_states; got "
                             f"{tuple(top_k_index.shape)}")
        if tuple(top_k_weights.shape) != tuple(top_k_index.shape):
            raise ValueError(f"{self._label()}: top_k_weights must have top_k_index's shape "
                             f"{tuple(top_k_index.shape)}; got {tuple(top_k_weights.shape)}")
        return experts_forward(self, hidden_states, top_k_index, top_k_weights,
                               self._project)

    def _project(self, tensor, x, sizes):
        return grouped_linear(x, getattr(self, tensor), sizes, recipe=self._recipes[tensor],
                              name=self._tensor_name(tensor), sr_streams=self._sr[tensor])

    def extra_repr(self):
        recipes = ", ".join(f"{k}={v}" for k, v in self._recipes.items())
        return (f"num_experts={self.num_experts}, hidden_dim={self.hidden_dim}, "
                f"intermediate_dim={self.intermediate_dim}, {recipes}")
