"""What each GEMM costs: FLOPs, and a per-device relative time per FLOP of each precision.

FLOPs. A linear layer ``Y = X W^T`` with ``X [M, K]`` (M tokens) and ``W [N, K]`` runs
three GEMMs per training step, each of ``2 * M * N * K`` FLOPs: fprop (``X W^T``), dgrad
(``dY W``) and wgrad (``dY^T X``). FLOPs are kept as Python ints so that budget checks can
be exact.

Relative time. ``DeviceCost.time[p]`` is the time one FLOP in precision ``p`` takes,
relative to BF16 (so ``time["bf16"] == 1``). Where it comes from, in order:

1. an explicit dict passed by the caller (source ``"user"``);
2. GEMM benchmark results in a directory the caller names (``results_dir``; the fields
   read are documented in ``load_bench_costs``);
3. the user cache file (``user_cache_path()``, by default
   ``~/.cache/lowprec/device_costs.json``), which ``lowprec bench`` writes on a GPU with
   the costs it measured for that device kind;
4. the defaults shipped with the package (``device_costs.json`` beside this module), each
   with its source, which the plan's meta names: Blackwell datasheet dense-throughput
   ratios bf16:fp8:nvfp4 = 1:2:4, i.e. time 1, 1/2, 1/4; Hopper: FP8 at the datasheet's
   2x BF16, NVFP4 *assumed* no faster than BF16 (it is a BF16 GEMM on dequantized
   operands; an assumption, not a measurement).

Nothing is read from the current directory or from a source checkout, so an installed
lowprec plans the same wherever it is run.
"""

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from lowprec.names import PRECISIONS

COSTS_FILE = "device_costs.json"


def _packaged_costs():
    """``{kind: (time dict, source)}`` from the package data file."""
    # Beside this file in a wheel and in a checkout alike (setup.py ships it as package
    # data); read by path so the module also loads outside an installed package.
    data = json.loads(Path(__file__).with_name(COSTS_FILE).read_text())
    return {kind: (entry["time"], entry["source"]) for kind, entry in data.items()
            if not kind.startswith("_")}


DEFAULT_COSTS = _packaged_costs()

# Names by which a bench file identifies a Hopper GPU when it gives no capability.
HOPPER_NAMES = ("H100", "H200", "H800", "H20", "GH200")


def gemm_flops(tokens, out_features, in_features):
    """FLOPs of one of the three GEMMs of a linear layer: ``2 * M * N * K`` (an int)."""
    return 2 * int(tokens) * int(out_features) * int(in_features)


@dataclass(frozen=True)
class DeviceCost:
    """Relative time per FLOP of each precision on one device kind (bf16 = 1)."""

    device: str
    time: dict = field(default_factory=dict)
    source: str = ""

    def relative_time(self, flops_by_precision):
        """Time of ``{precision: flops}`` relative to running all of it in BF16."""
        total = sum(flops_by_precision.values())
        if total == 0:
            return 1.0
        spent = sum(f * self.time[p] for p, f in flops_by_precision.items())
        return spent / (total * self.time["bf16"])

    def to_dict(self):
        return {"device": self.device, "time": dict(self.time), "source": self.source}


def _check_costs(costs, where):
    missing = [p for p in PRECISIONS if p not in costs]
    if missing:
        raise ValueError(f"{where} must give a relative time for each of {PRECISIONS}; "
                         f"missing {missing} in {costs!r}")
    bad = {p: v for p, v in costs.items() if not (isinstance(v, (int, float)) and v > 0)}
    if bad:
        raise ValueError(f"{where}: relative times must be positive numbers; got {bad}")
    # Normalise so that bf16 is exactly 1: every budget is relative to BF16.
    return {p: float(costs[p]) / float(costs["bf16"]) for p in PRECISIONS}


def user_cache_path():
    """The user's cache of measured device costs: ``$LOWPREC_CACHE_DIR`` or
    ``$XDG_CACHE_HOME/lowprec`` or ``~/.cache/lowprec``, file ``device_costs.json``."""
    base = os.environ.get("LOWPREC_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        base = os.path.join(xdg, "lowprec")
    return Path(base) / COSTS_FILE


def read_user_costs(path=None):
    """``{kind: (time dict, source)}`` from the user cache; {} when there is none.

    A file that cannot be read or does not hold valid costs is reported, not ignored:
    planning with numbers the user did not mean would be silent.
    """
    path = Path(path) if path is not None else user_cache_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        out = {}
        for kind, entry in data.items():
            if kind.startswith("_"):
                continue
            out[kind] = (_check_costs(entry["time"], f"{path} [{kind!r}]"),
                         f"{entry['source']} (cached in {path})")
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"the device cost cache {path} is unreadable ({err}); delete it or "
                         f"rerun `lowprec bench` to rewrite it") from err


def write_user_costs(kind, costs, source, path=None):
    """Store measured ``costs`` for device ``kind`` in the user cache; returns its path."""
    path = Path(path) if path is not None else user_cache_path()
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}                     # rewritten below with what was just measured
    data["_about"] = "written by `lowprec bench`; read by lowprec.planner.cost"
    data[kind] = {"time": _check_costs(costs, "measured costs"), "source": source}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def _is_hopper(device):
    if isinstance(device, dict):
        capability = device.get("capability")
        if capability:
            return int(capability[0]) == 9
        device = device.get("name", "")
    return any(tag in str(device) for tag in HOPPER_NAMES)


def load_bench_costs(results, want=_is_hopper):
    """Relative times measured by the GEMM benchmark, or None when there are none.

    ``results``: a directory (every ``*.json`` in it is read) or a list of files. A file
    is used when it holds:

    - ``"benchmark": "gemm"`` (files of other benchmarks are skipped);
    - ``"device"``: the GPU's name (str) or ``{"name": str, "capability": [major, minor]}``;
      only devices for which ``want(device)`` holds are read (default: Hopper);
    - ``"results"``: a list of ``{"precision": "bf16"|"fp8"|"nvfp4", "m": int, "n": int,
      "k": int, "tflops": float}``, one per measured GEMM (median of timed runs).

    For each precision the relative time is the median, over the ``(m, n, k)`` shapes
    measured in both that precision and BF16, of ``tflops_bf16 / tflops_p``.

    Returns:
        ``(costs dict, source str)`` or None when no file has both BF16 and every other
        precision measured.
    """
    if isinstance(results, (str, os.PathLike)):
        results_dir = Path(results)
        if not results_dir.is_dir():
            return None
        paths = sorted(results_dir.glob("*.json"))
    else:
        paths = [Path(p) for p in results]
        results_dir = paths[0].parent if paths else Path()
    tflops = {}          # (m, n, k) -> {precision: tflops}
    used = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue     # a half-written or foreign file is not ours to judge
        if not isinstance(data, dict) or data.get("benchmark") != "gemm":
            continue
        if not want(data.get("device", "")):
            continue
        for row in data.get("results", []):
            try:
                shape = (int(row["m"]), int(row["n"]), int(row["k"]))
                value = float(row["tflops"])
                precision = str(row["precision"])
            except (KeyError, TypeError, ValueError):
                continue
            if precision in PRECISIONS and value > 0:
                tflops.setdefault(shape, {})[precision] = value
        used.append(path.name)
    ratios = {p: [] for p in PRECISIONS}
    for by_precision in tflops.values():
        if "bf16" not in by_precision:
            continue
        for p, value in by_precision.items():
            ratios[p].append(by_precision["bf16"] / value)
    if not all(ratios[p] for p in PRECISIONS):
        return None
    costs = {p: statistics.median(ratios[p]) for p in PRECISIONS}
    shapes = len(ratios["nvfp4"])
    source = (f"measured: {', '.join(used)} in {results_dir} (median of tflops_bf16/tflops_p "
              f"over {shapes} shapes)")
    return costs, source


def detect_device():
    """``(kind, why)`` for the GPU visible here; Blackwell when there is none."""
    try:
        import torch
        if torch.cuda.is_available():
            major, _ = torch.cuda.get_device_capability()
            name = torch.cuda.get_device_name()
            if major >= 10:
                return "blackwell", f"{name} (sm_{major}x)"
            if major == 9:
                return "hopper", f"{name} (sm_90)"
            return "blackwell", f"{name} has no FP4 or FP8 tensor cores; planning for Blackwell"
    except Exception:   # no torch or a broken CUDA setup must not stop planning
        pass
    return "blackwell", "no GPU here: planning for Blackwell"


def device_cost(device=None, results_dir=None, cache_path=None):
    """The ``DeviceCost`` to plan with (the module docstring gives the order of sources).

    Args:
        device: None (detect: sm_90 -> Hopper, sm_100+ -> Blackwell, no GPU -> Blackwell),
            ``"blackwell"``, ``"hopper"``, or a dict ``{"bf16": t, "fp8": t, "nvfp4": t}``
            of relative times per FLOP.
        results_dir: a directory of Hopper GEMM benchmark results to use (none by default).
        cache_path: the user cache file (default ``user_cache_path()``).

    Returns:
        DeviceCost whose ``source`` says where the numbers came from.
    """
    if isinstance(device, dict):
        return DeviceCost("user", _check_costs(device, "device"), "user")
    why = None
    if device is None:
        device, why = detect_device()
    if device not in DEFAULT_COSTS:
        raise ValueError(f"device must be None, one of {sorted(DEFAULT_COSTS)} or a dict of "
                         f"relative times; got {device!r}")
    if device == "hopper" and results_dir is not None:
        measured = load_bench_costs(results_dir)
        if measured is not None:
            costs, source = measured
            return DeviceCost("hopper", _check_costs(costs, "bench results"), source)
    costs, source = read_user_costs(cache_path).get(device, DEFAULT_COSTS[device])
    if why:
        source = f"{source} ({why})"
    return DeviceCost(device, _check_costs(costs, device), source)
