"""Gather the planner's per-layer statistics over the calibration batches and ranks.

Per calibration batch, one clean and one noise-injected forward/backward (``hooks``),
each layer's sums taken from them (``layer_stats``, where the statistics and their
derivation are described), and the caller's RNG state replayed between the two passes
(``rng``). Both passes use ``torch.autograd.grad`` on the layer outputs, so parameter
``.grad`` fields, the optimizer and the caller's RNG state are untouched.

Distributed: every rank runs its own batches; after each batch the ranks agree whether
any failed (``distributed.agree``), so an error on one rank is raised on all of them
instead of leaving the others waiting; the sums are all-reduced before ``finalize``, so
a distributed run gets the same numbers as one process that saw every rank's batches.
"""

import sys
import time
from dataclasses import dataclass

import torch

from lowprec.conv1d import linear_weight
from lowprec.moe import experts_adapter
from lowprec.names import shape_problem
from lowprec.planner import gemm_error
from lowprec.planner.adam import adam_view
from lowprec.planner.distributed import agree, all_reduce_sum, resolve_group
from lowprec.planner.hooks import Hooks, MeasuredLayer, output_grads
from lowprec.planner.layer_stats import (
    COLUMN,
    FIELDS,
    accumulate_clean,
    accumulate_noisy,
    check_finite,
    finalize,
    param,
)
from lowprec.planner.loss import checked_loss, default_loss
from lowprec.planner.rng import mix_seed, restore_rng, save_rng
from lowprec.progress import Progress

DEFAULT_NOISE_SCALE = 0.05
DEFAULT_SEED = 0x5EED


@dataclass
class CollectedStats:
    """What ``collect_stats`` returns: ``layers`` (``{name: LayerStats}``), the seconds
    it took, the batches summed (over all ranks), the world size and the raw sums."""

    layers: dict
    seconds: float
    batches: int
    world_size: int = 1
    raw: torch.Tensor = None


def _expert_tensor(name, module):
    """The projection a candidate names when ``module`` holds experts, else None."""
    adapter = experts_adapter(module)
    if adapter is None:
        return None
    tensor = name.rpartition(".")[2]
    if tensor not in adapter.tensors:
        raise ValueError(f"candidate {name!r} holds experts; its name must end in one of "
                         f"{adapter.tensors}")
    return tensor


def _one_batch(model, batch, index, layers, raw, hooks, devices, recipe, seeds, optimizer,
               loss_fn, given):
    """Both passes of one calibration batch, added into ``raw``; non-finite values raise."""
    state = save_rng(devices)
    hooks.start("clean", index)
    loss = checked_loss(loss_fn, model, batch, given)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss_fn returned a non-finite loss ({loss.item()}) on "
                                 f"calibration batch {index}; no layer's statistics can be "
                                 f"measured on it (leave the batch out or fix the model)")
    output_grads(loss, layers)
    for layer in layers:
        accumulate_clean(layer, raw[layer.index], hooks, recipe, seeds, optimizer)
    restore_rng(state, devices)       # same dropout masks in the noise pass
    hooks.start("noisy", index)
    output_grads(checked_loss(loss_fn, model, batch, given), layers)
    for layer in layers:
        accumulate_noisy(layer, raw[layer.index])
        layer.calls = []
        check_finite(raw[layer.index], layer.name, f"on calibration batch {index}")


def _iterate(calibration, num_batches):
    if calibration is None:
        raise ValueError("the planner needs calibration batches (calibration=...); got None")
    if callable(calibration) and not hasattr(calibration, "__iter__"):
        calibration = calibration()
    try:
        total = len(calibration)
    except TypeError:
        total = None
    if num_batches is not None:
        total = num_batches if total is None else min(total, num_batches)
    return calibration, total


_END = object()                  # the calibration iterator is exhausted


def collect_stats(model, candidates, calibration, *, loss_fn=None, optimizer=None,
                  recipe=None, num_batches=None, noise_scale=DEFAULT_NOISE_SCALE,
                  seed=DEFAULT_SEED, progress=None, process_group="auto"):
    """Gather LD / WD / DX statistics of ``candidates`` on ``calibration`` batches.

    Args:
        model: the ``nn.Module`` (plain ``nn.Linear`` or ``lowprec.Linear`` layers).
        candidates: list of ``(name, module, forced_reason_or_None)``: an ``nn.Linear``
            or Conv1D (either's lowprec form), or a module holding experts with ``name``
            ending in the projection (``...experts.gate_up_proj``); forced layers are
            only counted (tokens), not measured.
        calibration: a finite iterable of batches (or a zero-argument callable returning
            one); an endless stream needs ``num_batches``.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` (it must run ``model`` and
            be differentiable); default ``default_loss`` (the model's own output, see
            there: ``(x, y)`` batches of a model returning logits need a ``loss_fn``).
        optimizer: an Adam/AdamW optimizer holding the layers' weights, for WD through
            its moments; None for the gradient-norm fallback.
        recipe: the ``lowprec.Recipe`` whose quantizer switches to emulate.
        num_batches: use at most this many batches.
        noise_scale: relative size of the curvature probe, ``sigma = noise_scale * rms(Y)``.
        seed: fixes the probe noise and the stochastic-rounding words.
        progress: progress bar on stderr (None: only on a terminal).
        process_group: ``"auto"`` (the default group when torch.distributed runs with
            more than one rank), a group, or None; statistics are summed over its ranks.

    Returns:
        CollectedStats with ``layers`` = ``{name: LayerStats}`` in candidate order.

    Raises:
        TypeError / ValueError naming ``loss_fn``: it failed on the batch's structure or
        returned no differentiable scalar (the message shows a ``loss_fn`` that suits
        the batch). FloatingPointError: a non-finite loss or statistic, naming the
        batch (and the layer). In a distributed run an error on any rank is raised on
        every rank after that batch, prefixed by the failing rank.
    """
    group, rank, world = resolve_group(process_group)
    layers = []
    for index, (name, module, forced) in enumerate(candidates):
        tensor = _expert_tensor(name, module)
        n, k = (getattr(module, tensor) if tensor else linear_weight(module)).shape[-2:]
        layers.append(MeasuredLayer(index=index, name=name, module=module, compute=forced is None,
                             nvfp4_ok=shape_problem(n, k) is None,
                             shape=(n, k), tensor=tensor))
    raw = torch.zeros(len(layers), len(FIELDS), dtype=torch.float64)
    seeds = gemm_error.SeedStream(mix_seed(seed, rank))
    batches, total = _iterate(calibration, num_batches)
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    start = time.perf_counter()
    used = 0
    iterator = None
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with torch.random.fork_rng(devices=devices), \
            Hooks(layers, noise_scale, mix_seed(seed, rank)) as hooks, \
            Progress("lowprec planner: statistics", total, enabled=show) as bar:
        while True:
            # Every rank takes part in each round, also after its own batches ran out,
            # so that an error on one rank reaches all of them (distributed.agree).
            active, failure = False, None
            try:
                iterator = iter(batches) if iterator is None else iterator
                batch = next(iterator, _END) if num_batches is None or used < num_batches \
                    else _END
                if batch is not _END:
                    active = True
                    _one_batch(model, batch, used, layers, raw, hooks, devices, recipe, seeds,
                               optimizer, loss_fn or default_loss, loss_fn is not None)
                    used += 1
                    bar.update(used)
            except Exception as err:              # noqa: BLE001  (handed to agree)
                failure = err
            if not agree(active, failure, group):
                break
    raw = all_reduce_sum(raw, group)
    total_batches = int(all_reduce_sum(torch.tensor([float(used)]), group)[0])
    if total_batches == 0:
        raise ValueError("calibration gave no batches (on any rank); the planner needs at "
                         "least one")
    if not any(raw[layer.index, COLUMN["tokens"]] > 0 for layer in layers):
        raise ValueError(f"loss_fn(model, batch) ran none of the {len(layers)} candidate "
                         f"layers on the calibration batches; it must compute the loss "
                         f"with the model (loss_fn={loss_fn!r})")
    uses_optimizer = [adam_view(optimizer, param(layer)) is not None for layer in layers]
    info = [(layer.name, layer.shape, layer.compute, layer.nvfp4_ok) for layer in layers]
    return CollectedStats(layers=finalize(raw, info, uses_optimizer),
                          seconds=time.perf_counter() - start, batches=total_batches,
                          world_size=world, raw=raw)
