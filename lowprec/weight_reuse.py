"""``lowprec.reusing_weight_copies(model)``: quantize each weight once for several calls.

With gradient accumulation a step runs forward and backward on several micro-batches
before the optimizer changes the weights, so every micro-batch would quantize the same
weights again (NVFP4: an amax pass and a quantize launch per layer and micro-batch). In

    with lowprec.reusing_weight_copies(model):
        for micro_batch in micro_batches:
            loss_fn(model, micro_batch).backward()
    optimizer.step()

each converted ``Linear`` / ``Conv1D`` quantizes its weight at its first call and reuses
those copies (fprop's W, dgrad's W^T) for the later ones, as Transformer Engine does
with ``is_first_microbatch``. The caller promises the weights do not change inside; a
layer still quantizes again when it sees another weight tensor, an in-place change of
it (``_version``), or another recipe. The copies are dropped on exit. The bits are those
of quantizing every time. Eager calls only: a ``torch.compile``d graph quantizes W on
every call. ``GroupedExperts`` quantize their experts' weights on every call.
"""

import contextlib

from lowprec.linear_layer import RecipeMixin, WeightCopies


@contextlib.contextmanager
def reusing_weight_copies(model):
    """Inside the block, every converted layer of ``model`` keeps its quantized weight
    copies from call to call (module docstring); yields ``model``. Nests."""
    layers = [m for m in model.modules()
              if isinstance(m, RecipeMixin) and m._weight_copies is None]
    try:
        for layer in layers:
            layer._weight_copies = WeightCopies()
        yield model
    finally:
        for layer in layers:
            del layer._weight_copies          # back to the class default, None
