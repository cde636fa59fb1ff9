"""Plan: the precision of every GEMM of every planned linear layer, and why.

``lowprec.convert`` builds one (the default rule, or the planner under a budget) and
applies it; ``model.lowprec_plan`` keeps it. A Plan serialises to JSON only (no pickle)
and prints as a table::

    layer        shape      FLOPs  fprop  dgrad  wgrad  LD fp4/fp8  WD fp4/fp8  cost  reason
    blocks.0.fc  (256, 64)  12.5%  nvfp4  nvfp4  nvfp4                                default recipe

JSON round trips are exact for values of JSON types (``meta`` and ``stats`` must hold
dicts with str keys, lists, str, int, float, bool, None; a tuple comes back as a list).
"""

import dataclasses
import json
import math

from lowprec.recipe import GEMMS, PRECISIONS, Recipe
from lowprec.table import format_table

PLAN_FORMAT_VERSION = 1

# What a plan entry is. "untouched": a module that multiplies by a weight it owns but
# that lowprec does not convert (a router, an unknown layer); it stays as it is, listed
# with the reason, so that the FLOPs shares cover every weight matmul of the model.
KINDS = ("linear", "conv1d", "experts", "untouched")


@dataclasses.dataclass
class LayerPlan:
    """The plan of one weight matmul (a linear layer, a Conv1D, one projection of a
    group of experts, or an untouched module).

    Attributes:
        name: the module's qualified name in the model (``model.get_submodule(name)``);
            for experts, the qualified name of the 3-D Parameter
            (``...experts.gate_up_proj``).
        shape: ``(out_features, in_features)``, i.e. the linear weight's (N, K) (one
            expert's for experts).
        fprop, dgrad, wgrad: precisions, each in ``PRECISIONS``.
        reason: why these precisions (a forced BF16 says what forced it).
        flops_share: this layer's fraction of all planned linear FLOPs, or None.
        cost: the planner's cost of this choice, or None.
        stats: planner statistics, e.g. ``{"ld": {"nvfp4": 1e-3, "fp8": 2e-4}, "wd": ...}``.
        kind: one of ``KINDS``; ``"untouched"`` is BF16 (the module runs as it is).
        block_list: the repeated block list holding the layer (its qualified name), or
            None outside every block list.
        experts: for experts, ``[E, top_k]``: E experts, each token through top_k.
    """

    name: str
    shape: tuple
    fprop: str
    dgrad: str
    wgrad: str
    reason: str
    flops_share: float | None = None
    cost: float | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    kind: str = "linear"
    block_list: str | None = None
    experts: list | None = None

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if self.kind not in KINDS:
            raise ValueError(f"LayerPlan {self.name}: kind must be one of {KINDS}; got "
                             f"{self.kind!r}")
        if self.experts is not None:
            self.experts = [int(d) for d in self.experts]
        if len(self.shape) != 2:
            raise ValueError(f"LayerPlan {self.name}: shape must be (out_features, "
                             f"in_features); got {self.shape}")
        for gemm in GEMMS:
            value = getattr(self, gemm)
            if value not in PRECISIONS:
                raise ValueError(f"LayerPlan {self.name}: {gemm} must be one of "
                                 f"{PRECISIONS}; got {value!r}")
        if self.kind == "untouched" and self.precisions() != ("bf16",) * 3:
            raise ValueError(f"LayerPlan {self.name} is untouched ({self.reason}); its "
                             f"GEMMs cannot be {self.precisions()}")

    def precisions(self):
        return tuple(getattr(self, gemm) for gemm in GEMMS)

    def macs_per_token(self):
        """Multiply-adds per token of one GEMM: N*K, times top_k for experts."""
        n, k = self.shape
        return n * k * (self.experts[1] if self.experts else 1)

    def shape_text(self):
        """``(N, K)``; ``8x(N, K) top2`` for 8 experts, each token through 2."""
        text = f"({self.shape[0]}, {self.shape[1]})"
        if self.experts:
            text = f"{self.experts[0]}x{text} top{self.experts[1]}"
        return text

    def recipe(self, base):
        """``base`` (its switches) with this layer's three precisions."""
        if not isinstance(base, Recipe):
            raise TypeError(f"LayerPlan.recipe takes a Recipe; got {type(base).__name__}")
        return base.replace(fprop=self.fprop, dgrad=self.dgrad, wgrad=self.wgrad)


@dataclasses.dataclass
class Plan:
    """Per-layer plans in model order, plus ``meta`` (budget, objective, device, ...).

    ``plan[name]`` is a LayerPlan; iterating yields the LayerPlans in order; ``len`` is
    the number of layers; ``name in plan`` tests for a layer.
    """

    layers: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.layers, dict):       # also accept a list of LayerPlans
            self.layers = {layer.name: layer for layer in self.layers}
        for name, layer in self.layers.items():
            if not isinstance(layer, LayerPlan) or layer.name != name:
                raise ValueError(f"Plan.layers[{name!r}] must be the LayerPlan named "
                                 f"{name!r}; got {layer!r}")

    def __getitem__(self, name):
        try:
            return self.layers[name]
        except KeyError:
            raise KeyError(f"no layer {name!r} in the plan; layers: "
                           f"{list(self.layers)}") from None

    def __iter__(self):
        return iter(self.layers.values())

    def __len__(self):
        return len(self.layers)

    def __contains__(self, name):
        return name in self.layers

    # -- summary and table ------------------------------------------------------------

    def _flops_shares(self):
        """Each layer's FLOPs share; from ``macs_per_token`` when the planner gave none.

        MACs per token are proportional to a layer's FLOPs when every layer sees the same
        tokens (true of a transformer's block linears; experts count top_k of E).
        """
        if all(layer.flops_share is not None for layer in self):
            return {layer.name: layer.flops_share for layer in self}
        total = sum(layer.macs_per_token() for layer in self) or 1
        return {layer.name: layer.macs_per_token() / total for layer in self}

    def summary(self):
        """Fraction of the planned matmul FLOPs in each precision, over all three GEMMs.

        The fprop, dgrad and wgrad of a layer each do a third of its FLOPs.
        """
        shares = self._flops_shares()
        total = sum(shares.values())
        out = {precision: 0.0 for precision in PRECISIONS}
        for layer in self:
            for precision in layer.precisions():
                out[precision] += shares[layer.name] / 3
        return {p: (v / total if total else 0.0) for p, v in out.items()}

    def table(self):
        """A readable, aligned table; blank cells where a value is None."""
        header = ("layer", "shape", "FLOPs", "fprop", "dgrad", "wgrad", "LD fp4/fp8",
                  "WD fp4/fp8", "cost", "reason")
        rows = [(layer.name, layer.shape_text(),
                 "" if layer.flops_share is None else f"{100 * layer.flops_share:.1f}%",
                 layer.fprop, layer.dgrad, layer.wgrad,
                 _stat_cell(layer.stats.get("ld")), _stat_cell(layer.stats.get("wd")),
                 "" if layer.cost is None else f"{layer.cost:.4g}", layer.reason)
                for layer in self]
        lines = [format_table(header, rows)]
        fractions = ", ".join(f"{p} {100 * f:.1f}%" for p, f in self.summary().items())
        lines.append(f"linear FLOPs by precision: {fractions}")
        if self.meta:
            lines.append("meta: " + ", ".join(f"{k}={v}" for k, v in self.meta.items()
                                              if k != "recipe"))
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    @staticmethod
    def legend():
        """What each column of ``table()`` (and each term of a planner's reason) means."""
        return "\n".join(f"  {name:<12} {text}" for name, text in TABLE_LEGEND)

    # -- JSON -------------------------------------------------------------------------

    def to_json(self, indent=None):
        """Valid JSON text of the plan.

        Raises TypeError naming a key JSON cannot hold, ValueError naming a NaN or
        infinite number (JSON has none; Python's bare ``NaN`` token is not JSON).
        """
        _check_json(self.meta, "meta")
        layers = []
        for layer in self:
            for key in ("flops_share", "cost", "stats"):
                _check_json(getattr(layer, key), f"layers[{layer.name!r}].{key}")
            entry = dataclasses.asdict(layer)
            entry["shape"] = list(layer.shape)
            layers.append(entry)
        return json.dumps({"format": PLAN_FORMAT_VERSION, "meta": self.meta,
                           "layers": layers}, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text):
        """The Plan of ``to_json``'s text; ValueError naming what is missing or wrong."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise ValueError(f"a lowprec plan must be JSON text: {err}") from None
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT_VERSION:
            raise ValueError(f"not a lowprec plan of format {PLAN_FORMAT_VERSION}: "
                             f"{str(data)[:80]!r}")
        missing = [key for key in ("meta", "layers") if key not in data]
        if missing:
            raise ValueError(f"plan JSON lacks {missing}")
        if not isinstance(data["meta"], dict) or not isinstance(data["layers"], list):
            raise ValueError(f"plan JSON: meta must be an object and layers a list; got "
                             f"{type(data['meta']).__name__} and "
                             f"{type(data['layers']).__name__}")
        layers, seen = [], set()
        for i, entry in enumerate(data["layers"]):
            layer = _layer_from_json(entry, f"layers[{i}]")
            if layer.name in seen:
                raise ValueError(f"plan JSON names layer {layer.name!r} twice "
                                 f"(again at layers[{i}])")
            seen.add(layer.name)
            layers.append(layer)
        return cls(layers, data["meta"])


# The JSON types of LayerPlan's fields (a field not listed here is not type-checked).
_FIELD_TYPES = {"name": (str,), "reason": (str,), "fprop": (str,), "dgrad": (str,),
                "wgrad": (str,), "flops_share": (int, float, type(None)),
                "cost": (int, float, type(None)), "stats": (dict,), "shape": (list,),
                "kind": (str,), "block_list": (str, type(None)),
                "experts": (list, type(None))}


def _layer_from_json(entry, where):
    """One LayerPlan from its JSON object, each field's type checked first."""
    if not isinstance(entry, dict):
        raise ValueError(f"plan JSON {where} must be an object; got {entry!r:.80}")
    fields = dataclasses.fields(LayerPlan)
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [key for key in required if key not in entry]
    unknown = [key for key in entry if key not in {f.name for f in fields}]
    if missing or unknown:
        raise ValueError(f"plan JSON {where} ({entry.get('name')!r}): missing fields "
                         f"{missing}, unknown fields {unknown}")
    for key, value in entry.items():
        types = _FIELD_TYPES.get(key, (object,))
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"plan JSON {where} ({entry.get('name')!r}): {key} must be "
                             f"{' or '.join(t.__name__ for t in types)}; "
                             f"got {value!r:.80}")
    shape = entry["shape"]
    if len(shape) != 2 or any(type(d) is not int or d < 1 for d in shape):
        raise ValueError(f"plan JSON {where} ({entry['name']!r}): shape must be two "
                         f"positive ints [out_features, in_features]; got {shape!r}")
    return LayerPlan(**entry)


# For a reader of ``Plan.table()``: one entry per column, then the terms of the reasons.
TABLE_LEGEND = (
    ("layer", "module name of the layer (experts: the projection's parameter, "
              "e.g. ...experts.gate_up_proj)"),
    ("shape", "(N, K) of its weight: (out_features, in_features); 'Ex(N, K) topk': "
              "E experts of that shape, each token through k of them"),
    ("FLOPs", "its share of the FLOPs of all the model's weight matmuls (fprop + dgrad "
              "+ wgrad; untouched modules included, experts counted top-k of E)"),
    ("fprop", "precision of the forward GEMM Y = X W^T"),
    ("dgrad", "precision of the input-gradient GEMM dX = dY W"),
    ("wgrad", "precision of the weight-gradient GEMM dW = dY^T X"),
    ("LD fp4/fp8", "loss divergence if fprop ran in NVFP4 / FP8: estimated loss change "
                   "from the GEMM's output error (first-order term + curvature term)"),
    ("WD fp4/fp8", "weight divergence if wgrad ran in NVFP4 / FP8: relative change of the "
                   "optimizer's update (of the weight gradient without an optimizer)"),
    ("cost", "the layer's GEMM time relative to all-BF16 under the plan's cost model "
             "(meta costs_for, cost_source)"),
    ("reason", "why the layer has these precisions"),
    ("dX err", "(in reasons) relative error of the gradient passed to the layers below "
               "if dgrad ran in NVFP4 / FP8"),
    ("sensitivity", "(in reasons) rank r/n of the layer's NVFP4 cost among the n layers "
                    "the planner chose for; 1 = most sensitive"),
    ("(blank)", "LD, WD and cost are blank in a plan made without measurements"),
)


def _stat_cell(value):
    """A table cell for a statistic: a number, or a dict's values in precision order."""
    if value is None:
        return ""
    if isinstance(value, dict):
        order = [p for p in PRECISIONS if p in value] + [k for k in value
                                                          if k not in PRECISIONS]
        return "/".join(_number(value[k]) for k in order)
    return _number(value)


def _number(value):
    return f"{value:.2e}" if isinstance(value, (int, float)) else str(value)


def _check_json(value, path):
    """Refuse what JSON would change or cannot hold: non-str keys (they would turn into
    strings silently) and NaN or infinite floats (no JSON token exists for them)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"Plan {path} has the key {key!r} of type "
                                f"{type(key).__name__}; JSON keys must be str")
            _check_json(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Plan {path} is {value}; JSON holds only finite numbers")
