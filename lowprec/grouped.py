"""``grouped_linear``: E linear layers over E groups of rows (the GEMMs of MoE experts).

``grouped_linear(x, weight, counts, recipe=r)`` takes the rows of ``x [T, K]`` sorted by
group (the first ``counts[0]`` rows go to group 0, the next ``counts[1]`` to group 1, ...)
and ``weight [E, N, K]``, and returns ``[T, N]`` whose group-e rows are
``lowprec.linear(x_e, weight[e], recipe=r)``: every expert runs the full recipe of
NUMERICS 7 (fprop, dgrad and wgrad each in the recipe's precision; 1x16 activations, 16x16
weight tiles, RHT and SR on wgrad, SR on dgrad) as its own linear layer.

What is per expert, and why:

* Global amax (NUMERICS 3): each operand of each expert's GEMM has its own, i.e. one
  per expert weight ``weight[e]`` and one per expert's tokens, exactly as if the expert
  were a ``lowprec.Linear``. An amax over all E weights would let one large expert
  crush the scales of the others, and per-token-group amaxes keep each expert's
  quantization independent of which other tokens were routed elsewhere.
* wgrad contracts over the expert's own tokens, padded to a multiple of 16 per expert
  (NUMERICS 10); an expert that got no tokens has a zero weight gradient.
* Stochastic rounding: each expert's call takes a key from its own stream
  (``sr_streams[e]``, ``lowprec.sr_keys``; ``GroupedExperts`` holds one per expert and
  projection), so an expert's keys depend neither on the routing nor on the order the
  experts run in; an empty expert takes one too. Without ``sr_streams`` every expert
  takes the next key of ``lowprec.linear``'s shared stream, in expert order.

Autograd runs over ``lowprec.linear``'s custom ops, one forward/backward pair per
expert; the expert weights are split with ``unbind`` so the backward writes each
expert's gradient once into one ``[E, N, K]`` tensor.

torch.compile: the expert row counts are data, so ``counts.tolist()`` needs
``torch._dynamo.config.capture_scalar_outputs = True``; with it, ``fullgraph=True``
traces ``grouped_linear`` and ``lowprec.moe.GroupedExperts`` without graph breaks, and
inductor's code gives eager's bits. Every ``tolist()`` under compile makes new unbacked
symbols, so layers over the same routing must share one list of sizes (``counts`` may be
that list): given two tensors' worth of symbols, inductor cannot prove that the second
layer's rows split at the first layer's offsets, and fails to lower the backward's
slices ("Could not guard on data-dependent expression" in torch 2.13).

Memory: what the backward keeps is what E separate ``lowprec.Linear`` layers over the
same routed rows keep: the quantized ``X^T`` of each expert's rows (NVFP4: 0.5625 bytes
per element plus the padding to 16 rows per expert; FP8: 1 byte), never ``x`` itself
unless wgrad is ``"bf16"``. Weights are Parameters and are not copied; each expert's
NVFP4 weight copy lives only during its own GEMM.
"""

import numbers

import torch

from lowprec import sr_keys
from lowprec.linear_layer import DEFAULT_RECIPE, check_nvfp4_shape, linear
from lowprec.recipe import Recipe


def _check(x, weight, counts, name):
    """Shapes and counts, before any work: each error names the value."""
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError(f"grouped_linear{name} needs tensors x [T, K] and weight [E, N, K]; "
                        f"got {type(x).__name__} and {type(weight).__name__}")
    if weight.dim() != 3 or x.dim() != 2 or x.shape[1] != weight.shape[2]:
        raise ValueError(f"grouped_linear{name} needs x [T, K] and weight [E, N, K]; got x "
                         f"{tuple(x.shape)} and weight {tuple(weight.shape)}")
    if weight.shape[0] == 0:
        raise ValueError(f"grouped_linear{name} needs at least one expert; got weight "
                         f"{tuple(weight.shape)} (E=0)")
    if isinstance(counts, torch.Tensor):
        if counts.dim() != 1 or counts.numel() != weight.shape[0]:
            raise ValueError(f"grouped_linear{name}: counts must hold one entry per expert "
                             f"(E={weight.shape[0]}); got shape {tuple(counts.shape)}")
        if counts.dtype.is_floating_point or counts.dtype.is_complex \
                or counts.dtype == torch.bool:
            raise TypeError(f"grouped_linear{name}: counts must be an integer tensor; got "
                            f"{counts.dtype}")
        return
    if not isinstance(counts, (list, tuple)):
        raise TypeError(f"grouped_linear{name}: counts must be an integer tensor [E] or a "
                        f"list of E ints; got {counts!r:.80}")
    if len(counts) != weight.shape[0]:
        raise ValueError(f"grouped_linear{name}: counts must hold one entry per expert "
                         f"(E={weight.shape[0]}); got {len(counts)} entries")
    # torch.SymInt: the sizes a compiled caller got from counts.tolist().
    bad = [c for c in counts if isinstance(c, bool)
           or not isinstance(c, (numbers.Integral, torch.SymInt))]
    if bad:
        raise TypeError(f"grouped_linear{name}: counts must be ints (rows per expert); got "
                        f"{bad[0]!r} in {list(counts)!r:.80}")


def grouped_linear(x, weight, counts, *, recipe=None, name=None, sr_streams=None):
    """Run expert e's linear layer (``weight[e]``) on its ``counts[e]`` rows of ``x``.

    Args:
        x: ``[T, K]``, rows sorted by expert.
        weight: ``[E, N, K]`` (K and N multiples of 16 when a GEMM is NVFP4).
        counts: integer tensor ``[E]`` summing to T (experts may have 0 rows), or the
            list of its E ints (``counts.tolist()``; pass the same list to every
            grouped_linear over the same routing, see the module docstring).
        recipe: a ``lowprec.Recipe`` for every expert; None means ``Recipe()``.
        name: names the layer in error messages.
        sr_streams: E ``lowprec.sr_keys.SRStream``, expert e's SR keys from the e-th;
            None: ``lowprec.linear``'s shared stream.

    Returns:
        ``[T, N]`` in x's dtype (the autocast dtype under autocast).

    Raises:
        ValueError: shapes that do not fit, no experts (E=0), negative counts or counts
        that do not sum to T, or NVFP4 on a K or N that is not a multiple of 16.
        TypeError: a recipe that is not a Recipe; counts that are not an integer tensor
        or a list of ints (None, strings, floats, bools).
    """
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    label = f" ({name})" if name else ""
    if not isinstance(recipe, Recipe):            # as lowprec.linear says it
        raise TypeError(f"grouped_linear{label}: recipe must be a lowprec.Recipe; got "
                        f"{type(recipe).__name__} {recipe!r:.40}")
    _check(x, weight, counts, label)
    check_nvfp4_shape(weight.shape[1:], recipe, name)
    sizes = counts.tolist() if isinstance(counts, torch.Tensor) else list(counts)
    if torch.compiler.is_compiling():
        # The sizes are data-dependent symbols here: tell the compiler what holds
        # rather than branch on them (which would break the graph).
        for size in sizes:
            torch._check(size >= 0)
        torch._check(sum(sizes) == x.shape[0])
    else:
        negative = [(e, size) for e, size in enumerate(sizes) if size < 0]
        if negative:
            raise ValueError(f"grouped_linear{label}: counts {sizes} must be >= 0; expert "
                             f"{negative[0][0]} has {negative[0][1]} rows")
        if sum(sizes) != x.shape[0]:
            raise ValueError(f"grouped_linear{label}: counts {sizes} must be >= 0 and sum "
                             f"to the {x.shape[0]} rows of x; they sum to {sum(sizes)}")
    streams = sr_streams or [sr_keys.FUNCTIONAL] * weight.shape[0]
    if len(streams) != weight.shape[0]:
        raise ValueError(f"grouped_linear{label}: sr_streams must hold one stream per "
                         f"expert ({weight.shape[0]}); got {len(streams)}")
    outputs = [linear(rows, w, recipe=recipe, sr_stream=stream)
               for rows, w, stream in zip(x.split(sizes), weight.unbind(0), streams)]
    return torch.cat(outputs)
