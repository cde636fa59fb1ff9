"""The calibration loss: the model's own output by default, and errors that show a
``loss_fn`` which suits the batch.

The planner differentiates ``loss_fn(model, batch)``; when that fails or returns
something other than a differentiable scalar, the message names ``loss_fn``, describes
what came back and proposes a ``loss_fn`` for the batch's structure.
"""

import torch


def default_loss(model, batch):
    """The loss ``make_plan`` uses when no ``loss_fn`` is given: ``model``'s own output.

    The batch is unpacked into the model's arguments: a dict as ``model(**batch)``, a
    tuple or list as ``model(*batch)`` (so an ``(x, y)`` batch calls ``model(x, y)``), a
    tensor or anything else as ``model(batch)``. The model must then return the loss:
    a scalar tensor, a tuple/list starting with one, a dict with ``"loss"``, or an
    object with ``.loss`` (Hugging Face style). A model that returns logits needs a
    ``loss_fn(model, batch) -> scalar``, e.g. for ``(x, y)`` batches
    ``loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1])``.
    """
    if isinstance(batch, dict):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    loss = out
    if isinstance(out, dict):
        loss = out.get("loss")
    elif isinstance(out, (tuple, list)) and out:
        loss = out[0]
    elif not isinstance(out, torch.Tensor):
        loss = getattr(out, "loss", None)
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise TypeError(f"the model's output is not a loss: {describe(out)}; pass "
                        f"{example_loss_fn(batch)}")
    return loss.reshape(())


def describe(value):
    """A short description of what a loss function returned, for error messages."""
    if isinstance(value, torch.Tensor):
        return (f"a {value.dtype} tensor of shape {tuple(value.shape)}"
                + ("" if value.numel() != 1 else f" ({value.item():.6g})"))
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: " \
               f"({', '.join(describe(v) for v in value[:3])}{', ...' if len(value) > 3 else ''})"
    return f"{type(value).__name__} {value!r}"[:120]


def example_loss_fn(batch):
    """A ``loss_fn`` that suits ``batch``'s structure, to show in error messages."""
    if isinstance(batch, dict):
        return "loss_fn=lambda m, b: m(**b).loss  (or m(**b)['loss'])"
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return "loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1])"
    if isinstance(batch, torch.Tensor) and batch.dim() == 2 and not batch.is_floating_point():
        return ("loss_fn=lambda m, b: F.cross_entropy(m(b[:, :-1]).flatten(0, 1), "
                "b[:, 1:].flatten())  (next-token prediction)")
    return "loss_fn=lambda m, b: <a scalar loss tensor computed by m from b>"


def checked_loss(loss_fn, model, batch, given):
    """``loss_fn(model, batch)`` as a 0-d tensor, or an error naming ``loss_fn``.

    ``given``: the caller passed ``loss_fn`` (else it is ``default_loss``, and the
    message says so).
    """
    who = "loss_fn" if given else "loss_fn (omitted: the default, lowprec.planner.default_loss)"
    shape = "; ".join(["loss_fn is called as loss_fn(model, batch) and must return a "
                       "scalar tensor that requires grad",
                       f"for this batch ({describe(batch)}) try {example_loss_fn(batch)}"])
    try:
        loss = loss_fn(model, batch)
    except TypeError as err:
        raise TypeError(f"{who} failed: {err}; {shape}") from err
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise TypeError(f"{who} returned {describe(loss)}, not a scalar loss; {shape}")
    if not loss.requires_grad:
        raise ValueError(f"{who} returned a loss that does not require grad "
                         f"({describe(loss)}): the planner differentiates it, so it must "
                         f"be computed from the model's output with autograd enabled")
    return loss.reshape(())
