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

from lowprec.recipe import GEMMS, PRECISIONS, Recipe

PLAN_FORMAT_VERSION = 1


@dataclasses.dataclass
class LayerPlan:
    """The plan of one linear layer.

    Attributes:
        name: the module's qualified name in the model (``model.get_submodule(name)``).
        shape: ``(out_features, in_features)``, i.e. the weight's (N, K).
        fprop, dgrad, wgrad: precisions, each in ``PRECISIONS``.
        reason: why these precisions (a forced BF16 says what forced it).
        flops_share: this layer's fraction of all planned linear FLOPs, or None.
        cost: the planner's cost of this choice, or None.
        stats: planner statistics, e.g. ``{"ld": {"nvfp4": 1e-3, "fp8": 2e-4}, "wd": ...}``.
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

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if len(self.shape) != 2:
            raise ValueError(f"LayerPlan {self.name}: shape must be (out_features, "
                             f"in_features); got {self.shape}")
        for gemm in GEMMS:
            value = getattr(self, gemm)
            if value not in PRECISIONS:
                raise ValueError(f"LayerPlan {self.name}: {gemm} must be one of "
                                 f"{PRECISIONS}; got {value!r}")

    def precisions(self):
        return tuple(getattr(self, gemm) for gemm in GEMMS)

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
        """Each layer's FLOPs share; from N*K when the planner gave none.

        N*K is proportional to a linear layer's FLOPs when every layer sees the same
        tokens (true of a transformer's block linears).
        """
        if all(layer.flops_share is not None for layer in self):
            return {layer.name: layer.flops_share for layer in self}
        total = sum(n * k for n, k in (layer.shape for layer in self)) or 1
        return {layer.name: layer.shape[0] * layer.shape[1] / total for layer in self}

    def summary(self):
        """Fraction of planned linear FLOPs in each precision, over all three GEMMs.

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
        rows = [header]
        for layer in self:
            rows.append((
                layer.name, f"({layer.shape[0]}, {layer.shape[1]})",
                "" if layer.flops_share is None else f"{100 * layer.flops_share:.1f}%",
                layer.fprop, layer.dgrad, layer.wgrad,
                _stat_cell(layer.stats.get("ld")), _stat_cell(layer.stats.get("wd")),
                "" if layer.cost is None else f"{layer.cost:.4g}", layer.reason))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                 for row in rows]
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
        """JSON text of the plan (raises TypeError naming a value JSON cannot hold)."""
        _check_json_keys(self.meta, "meta")
        layers = []
        for layer in self:
            _check_json_keys(layer.stats, f"layers[{layer.name!r}].stats")
            entry = dataclasses.asdict(layer)
            entry["shape"] = list(layer.shape)
            layers.append(entry)
        return json.dumps({"format": PLAN_FORMAT_VERSION, "meta": self.meta,
                           "layers": layers}, indent=indent)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT_VERSION:
            raise ValueError(f"not a lowprec plan of format {PLAN_FORMAT_VERSION}: "
                             f"{str(data)[:80]!r}")
        return cls([LayerPlan(**entry) for entry in data["layers"]], data["meta"])


# For a reader of ``Plan.table()``: one entry per column, then the terms of the reasons.
TABLE_LEGEND = (
    ("layer", "module name of the linear layer"),
    ("shape", "(N, K) of its weight: (out_features, in_features)"),
    ("FLOPs", "its share of all linear-layer FLOPs (fprop + dgrad + wgrad)"),
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


def _check_json_keys(value, path):
    """JSON turns non-str dict keys into strings silently; refuse them instead."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"Plan {path} has the key {key!r} of type "
                                f"{type(key).__name__}; JSON keys must be str")
            _check_json_keys(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_keys(item, f"{path}[{i}]")
