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
import numbers
import os

from lowprec.names import GEMMS, PRECISIONS
from lowprec.recipe import Recipe
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
        recipe: the layer's ``Recipe``: its three precisions, and the switches of the
            recipe the plan was made with (in a plan file, ``meta["recipe"]``).
        reason: why these precisions (a forced BF16 says what forced it).
        flops_share: this layer's fraction of the multiply-adds per token of all the
            plan's entries, in [0, 1], or None. ``convert``'s plans (``policy``) count
            every layer once per token; ``make_plan``'s own plan counts the tokens each
            layer saw in calibration (``BUDGET_SHARE_DEFINITION``).
        cost: the planner's cost of this choice (>= 0), or None.
        stats: planner statistics, e.g. ``{"ld": {"nvfp4": 1e-3, "fp8": 2e-4}, "wd": ...}``.
        kind: one of ``KINDS``; ``"untouched"`` is BF16 (the module runs as it is).
        block_list: the repeated block list holding the layer (its qualified name; ""
            when the model itself is the list), or None outside every block list. The
            layer's name is ``<block_list>.<block index>.<...>``.
        experts: for experts, ``[E, top_k]``: E experts, each token through top_k
            (1 <= top_k <= E); None for every other kind.
    """

    name: str
    shape: tuple
    recipe: Recipe
    reason: str
    flops_share: float | None = None
    cost: float | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    kind: str = "linear"
    block_list: str | None = None
    experts: list | None = None

    def __post_init__(self):
        # The precisions are checked by Recipe itself; here only what a plan adds.
        if not isinstance(self.recipe, Recipe):
            raise TypeError(f"LayerPlan {self.name}: recipe must be a lowprec.Recipe; got "
                            f"{type(self.recipe).__name__}")
        self.shape = tuple(int(d) for d in self.shape)
        if self.kind not in KINDS:
            raise ValueError(f"LayerPlan {self.name}: kind must be one of {KINDS}; got "
                             f"{self.kind!r}")
        if self.experts is not None:
            self.experts = [int(d) for d in self.experts]
        if len(self.shape) != 2:
            raise ValueError(f"LayerPlan {self.name}: shape must be (out_features, "
                             f"in_features); got {self.shape}")
        if self.kind == "untouched" and self.recipe.quantized:
            raise ValueError(f"LayerPlan {self.name} is untouched ({self.reason}); its "
                             f"GEMMs cannot be {self.precisions()}")

    def precisions(self):
        """``(fprop, dgrad, wgrad)`` of the layer's recipe."""
        return self.recipe.precisions()

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

    def base_recipe(self):
        """The recipe the plan was made with (``meta["recipe"]``, else ``Recipe()``): its
        switches are every layer's, and a plan file stores them only there."""
        return _plan_switches(self.meta, "Plan")

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
        """Fraction of the planned matmul FLOPs in each precision, over all three GEMMs
        (``SHARE_DEFINITION``: weighted by the layers' ``flops_share``).

        The fprop, dgrad and wgrad of a layer each do a third of its FLOPs. On a
        converted model this counts every layer once per token, which is not the
        planner's ``meta["nvfp4_fraction"]`` (``BUDGET_SHARE_DEFINITION``): that one
        counts the tokens each layer saw in calibration, so the two differ when stacks
        see different lengths (an encoder and a decoder). ``table()`` prints both.
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
                 *layer.precisions(),
                 _stat_cell(layer.stats.get("ld")), _stat_cell(layer.stats.get("wd")),
                 "" if layer.cost is None else f"{layer.cost:.4g}", layer.reason)
                for layer in self]
        lines = [format_table(header, rows)]
        fractions = ", ".join(f"{p} {100 * f:.1f}%" for p, f in self.summary().items())
        lines.append(f"linear FLOPs by precision: {fractions} ({SHARE_DEFINITION})")
        # The planner's budget share counts tokens per layer, so with stacks of different
        # lengths (an encoder and a decoder) it differs from the line above: print it
        # here with its definition instead of as a bare number among the meta.
        budget_share = self.meta.get("nvfp4_fraction")
        if isinstance(budget_share, (int, float)) and not isinstance(budget_share, bool):
            lines.append(f"planner's nvfp4_fraction (the budget's share): "
                         f"{100 * budget_share:.1f}% ({BUDGET_SHARE_DEFINITION})")
        shown = [f"{k}={v}" for k, v in self.meta.items()
                 if k not in ("recipe", "nvfp4_fraction")]
        if shown:
            lines.append("meta: " + ", ".join(shown))
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
        infinite number (JSON has none; Python's bare ``NaN`` token is not JSON), a
        field ``from_json`` would refuse (``_check_layer``: the one schema of both), or
        a layer whose recipe's switches are not the plan's (``base_recipe``): each
        layer's entry holds its three precisions, ``meta["recipe"]`` the switches.
        """
        _check_json(self.meta, "meta")
        switches = self.base_recipe()
        layers = []
        for layer in self:
            where = f"layers[{layer.name!r}]"
            _check_layer(layer, where, "Plan")
            if layer.recipe.switches() != switches.switches():
                raise ValueError(f"Plan {where}: its recipe's switches ({layer.recipe}) are "
                                 f"not the plan's (meta['recipe'], default Recipe()); a "
                                 f"plan file holds one set of switches")
            layers.append(_layer_to_json(layer))
        return json.dumps({"format": PLAN_FORMAT_VERSION, "meta": self.meta,
                           "layers": layers}, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text):
        """The Plan of ``to_json``'s text (to read a file: ``Plan.load(path)``).

        The same checks as ``to_json`` (``_check_layer``), so a plan it accepts is one
        ``to_json`` would write. Raises ValueError naming the field and the value that
        is missing or wrong (also for nesting too deep to check).
        """
        if _looks_like_path(text):
            raise ValueError(f"a lowprec plan must be JSON text; got {text!r}, which looks "
                             f"like a file path: use lowprec.Plan.load(path) to read a "
                             f"plan file")
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError(f"a lowprec plan must be JSON text nested at most "
                             f"{MAX_DEPTH} levels deep; got deeper") from None
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
        _check_json(data["meta"], "meta", "plan JSON")
        switches = _plan_switches(data["meta"], "plan JSON")
        layers, seen = [], set()
        for i, entry in enumerate(data["layers"]):
            layer = _layer_from_json(entry, f"layers[{i}]", switches)
            if layer.name in seen:
                raise ValueError(f"plan JSON names layer {layer.name!r} twice "
                                 f"(again at layers[{i}])")
            seen.add(layer.name)
            layers.append(layer)
        return cls(layers, data["meta"])

    def save(self, path):
        """Write the plan to the file ``path`` as JSON (``to_json``, indented)."""
        text = self.to_json(indent=2)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    @classmethod
    def load(cls, path):
        """The Plan saved at ``path`` (``save``, or any file of ``to_json``'s text).

        Raises OSError if the file cannot be read, ValueError naming the file and what
        is wrong in it.
        """
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            return cls.from_json(text)
        except ValueError as err:
            raise ValueError(f"{os.fspath(path)}: {err}") from None


# A layer's entry in a plan file: LayerPlan's fields, its recipe as the three precisions
# (the switches are the plan's, in meta["recipe"]), in this order.
_JSON_FIELDS = ("name", "shape", *GEMMS, "reason", "flops_share", "cost", "stats", "kind",
                "block_list", "experts")
_REQUIRED_JSON_FIELDS = ("name", "shape", *GEMMS, "reason")

# The JSON types of those fields.
_FIELD_TYPES = {"name": (str,), "reason": (str,), "fprop": (str,), "dgrad": (str,),
                "wgrad": (str,), "flops_share": (int, float, type(None)),
                "cost": (int, float, type(None)), "stats": (dict,), "shape": (list,),
                "kind": (str,), "block_list": (str, type(None)),
                "experts": (list, type(None))}


def _plan_switches(meta, source):
    """The recipe whose switches a plan's layers share: ``meta["recipe"]`` (the recipe
    the plan was made with, as ``Recipe.to_dict``), else ``Recipe()``."""
    if "recipe" not in meta:
        return Recipe()
    try:
        return Recipe.from_dict(meta["recipe"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source} meta['recipe'] must be a recipe (Recipe.to_dict): "
                         f"{err}") from None


def _layer_to_json(layer):
    entry = {}
    for key in _JSON_FIELDS:
        entry[key] = getattr(layer.recipe if key in GEMMS else layer, key)
    entry["shape"] = list(layer.shape)
    return entry


def _layer_from_json(entry, where, switches):
    """One LayerPlan from its JSON object, each field's type checked first; its recipe is
    ``switches`` with the entry's precisions."""
    if not isinstance(entry, dict):
        raise ValueError(f"plan JSON {where} must be an object; got {entry!r:.80}")
    missing = [key for key in _REQUIRED_JSON_FIELDS if key not in entry]
    unknown = [key for key in entry if key not in _JSON_FIELDS]
    if missing or unknown:
        raise ValueError(f"plan JSON {where} ({entry.get('name')!r}): missing fields "
                         f"{missing}, unknown fields {unknown}")
    for key, value in entry.items():
        types = _FIELD_TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"plan JSON {where} ({entry.get('name')!r}): {key} must be "
                             f"{' or '.join(t.__name__ for t in types)}; "
                             f"got {value!r:.80}")
    shape = entry["shape"]
    if len(shape) != 2 or any(type(d) is not int or d < 1 for d in shape):
        raise ValueError(f"plan JSON {where} ({entry['name']!r}): shape must be two "
                         f"positive ints [out_features, in_features]; got {shape!r}")
    experts = entry.get("experts")
    if experts is not None and any(type(d) is not int for d in experts):
        # Before LayerPlan's int() turns "3" into 3 or fails without naming the field.
        raise ValueError(f"plan JSON {where} ({entry['name']!r}): experts must be two "
                         f"ints [E, top_k]; got {experts!r:.80}")
    fields = {key: value for key, value in entry.items() if key not in GEMMS}
    try:
        recipe = switches.replace(**{gemm: entry[gemm] for gemm in GEMMS})
        layer = LayerPlan(recipe=recipe, **fields)
    except ValueError as err:
        raise ValueError(f"plan JSON {where} ({entry['name']!r}): {err}") from None
    _check_layer(layer, where, "plan JSON")
    return layer


def _check_layer(layer, where, source):
    """The schema of one entry, for ``to_json`` and ``from_json`` alike (the types of
    the JSON fields are checked by ``_layer_from_json`` before this).

    ValueError naming ``where`` (``source`` says which side: "Plan" or "plan JSON"),
    the field and its value.
    """
    label = f"{source} {where} ({layer.name!r})"
    for key in ("flops_share", "cost"):            # NaN and Inf named as to_json always did
        _check_json(getattr(layer, key), f"{where}.{key}", source)
    if not isinstance(layer.name, str) or not layer.name:
        raise ValueError(f"{label}: name must be a non-empty str (the module's qualified "
                         f"name); got {layer.name!r}")
    share = layer.flops_share
    if share is not None and not (_is_number(share) and 0 <= share <= 1):
        raise ValueError(f"{label}: flops_share must be a number in [0, 1] or null; got "
                         f"{share!r}")
    if layer.cost is not None and not (_is_number(layer.cost) and layer.cost >= 0
                                       and math.isfinite(layer.cost)):
        raise ValueError(f"{label}: cost must be a finite number >= 0 or null; got "
                         f"{layer.cost!r}")
    _check_json(layer.stats, f"{where}.stats", source)
    if layer.kind == "experts":
        e_top = layer.experts
        if e_top is None or len(e_top) != 2 or not 1 <= e_top[1] <= e_top[0]:
            raise ValueError(f"{label}: experts must be [E, top_k] with 1 <= top_k <= E "
                             f"on an experts entry; got {e_top!r}")
    elif layer.experts is not None:
        raise ValueError(f"{label}: experts is only for kind 'experts' ([E, top_k]); a "
                         f"{layer.kind} entry must have null; got {layer.experts!r}")
    if layer.block_list is not None and not _in_block_list(layer.name, layer.block_list):
        raise ValueError(f"{label}: block_list {layer.block_list!r} does not hold the "
                         f"layer: its name must be '<block_list>.<block index>.<...>'")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value)


def _in_block_list(name, block_list):
    """True if ``name`` lies in block ``i`` of the list ``block_list`` ("" = the root)."""
    if not isinstance(block_list, str):
        return False
    prefix = f"{block_list}." if block_list else ""
    head = name[len(prefix):].split(".", 1)[0] if name.startswith(prefix) else ""
    return head.isdigit()


def _looks_like_path(text):
    """A path handed to ``from_json``: a PathLike, or a str that is no JSON and names an
    existing file or ends in ``.json``."""
    if isinstance(text, os.PathLike):
        return True
    if not isinstance(text, str) or text.lstrip().startswith(("{", "[")):
        return False
    stripped = text.strip()
    if stripped.lower().endswith(".json"):
        return True
    try:
        return "\n" not in stripped and os.path.isfile(stripped)
    except (OSError, ValueError):
        return False


# What the table's "linear FLOPs by precision" line (``Plan.summary()``) and its FLOPs
# column are shares of, and what the planner's meta["nvfp4_fraction"] is a share of.
SHARE_DEFINITION = ("of the FLOPs column: each layer's flops_share, a third per GEMM; "
                    "in convert's plans a layer's multiply-adds per token over those of "
                    "all listed weight matmuls, untouched ones included, so every layer "
                    "is counted once per token")
BUDGET_SHARE_DEFINITION = ("share of the FLOPs the planned layers ran on the calibration "
                           "batches: each layer's own token count x N x K, "
                           "fprop+dgrad+wgrad; the budget bounds this one")

# How deep ``meta`` and ``stats`` may nest (deeper is refused, not a RecursionError).
MAX_DEPTH = 64


# For a reader of ``Plan.table()``: one entry per column, then the terms of the reasons.
TABLE_LEGEND = (
    ("layer", "module name of the layer (experts: the projection's parameter, "
              "e.g. ...experts.gate_up_proj)"),
    ("shape", "(N, K) of its weight: (out_features, in_features); 'Ex(N, K) topk': "
              "E experts of that shape, each token through k of them"),
    ("FLOPs", "its share of the FLOPs of all the model's weight matmuls (fprop + dgrad "
              "+ wgrad; untouched modules included, experts counted top-k of E), per "
              "token: every layer counted once per token"),
    ("nvfp4_fraction", "(below the table, a planner's plan) the NVFP4 share the budget "
                       "bounds: of the FLOPs the planned layers ran on the calibration "
                       "batches, each layer with its own token count"),
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


def _check_json(value, path, source="Plan"):
    """Refuse what JSON would change or cannot hold: non-str keys (they would turn into
    strings silently), NaN or infinite floats (no JSON token exists for them), and
    nesting deeper than ``MAX_DEPTH``. Iterative, so depth cannot raise RecursionError.
    """
    stack = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{source} {where} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"{source} {where} has the key {key!r} of type "
                                    f"{type(key).__name__}; JSON keys must be str")
                stack.append((child, f"{where}[{key!r}]", depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{where}[{i}]", depth + 1)
                         for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{source} {where} is {item}; JSON holds only finite numbers")
