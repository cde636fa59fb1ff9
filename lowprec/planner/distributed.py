"""The collectives the planner needs: sum statistics, broadcast the plan as JSON, and
agree after each calibration batch whether to go on or to fail.

Everything is sent as tensors (float64 sums and flags; UTF-8 text as uint8), so no
pickling is involved and every rank decodes the same bytes into the same plan or error.
"""

import builtins

import torch
import torch.distributed as dist


def resolve_group(process_group):
    """``(group, rank, world_size)``; group None means "not distributed".

    ``process_group="auto"`` uses the default group when torch.distributed is
    initialised with more than one rank; ``None`` forces single-process planning.
    """
    if process_group is None or not (dist.is_available() and dist.is_initialized()):
        return None, 0, 1
    group = dist.group.WORLD if process_group == "auto" else process_group
    world = dist.get_world_size(group)
    if world == 1:
        return None, 0, 1
    return group, dist.get_rank(group), world


def _device_for(group):
    backend = dist.get_backend(group)
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" \
        else torch.device("cpu")


def all_reduce_sum(tensor, group):
    """Sum ``tensor`` over the ranks of ``group`` (returns a new CPU float64 tensor)."""
    if group is None:
        return tensor
    buf = tensor.to(device=_device_for(group), dtype=torch.float64).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf.cpu()


def broadcast_text(text, group, src_rank=0):
    """Send ``text`` (str on ``src_rank``, ignored elsewhere) to every rank; returns it."""
    if group is None:
        return text
    device = _device_for(group)
    src = dist.get_global_rank(group, src_rank) if group is not dist.group.WORLD else src_rank
    is_src = dist.get_rank(group) == src_rank
    payload = text.encode("utf-8") if is_src else b""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=src, group=group)
    buf = torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    if is_src:
        buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buf, src=src, group=group)
    return buf.cpu().numpy().tobytes().decode("utf-8")


def rebuild_error(type_name, message, known=None):
    """An exception of the named type (from ``known``, else a builtin) with ``message``.

    A type that cannot be rebuilt that way becomes a RuntimeError naming it.
    """
    cls = (known or {}).get(type_name) or getattr(builtins, type_name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:             # a constructor that wants other arguments
            pass
    return RuntimeError(f"{type_name}: {message}")


def agree(active, failure, group, known=None):
    """One round of "did any rank fail, and is any rank still busy?"; every rank calls it.

    ``active``: this rank did work this round (it had a batch). ``failure``: the
    exception this rank hit this round, or None. If any rank failed, every rank raises
    the same error (type and message of the lowest failing rank, prefixed by its rank;
    on that rank chained to the original) instead of leaving the others waiting in the
    next collective until the process-group timeout. Otherwise returns whether any rank
    was active, so that ranks with fewer batches keep taking part until all are done.
    Without a group: re-raises ``failure`` as it is, or returns ``active``.
    """
    if group is None:
        if failure is not None:
            raise failure
        return active
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    flags = torch.zeros(world, dtype=torch.float64)
    flags[rank] = 2.0 if failure is not None else 1.0 if active else 0.0
    flags = all_reduce_sum(flags, group)
    failed = [r for r in range(world) if flags[r] == 2.0]
    if not failed:
        return bool((flags == 1.0).any())
    src = failed[0]
    text = f"{type(failure).__name__}\n{failure}" if rank == src else None
    type_name, message = broadcast_text(text, group, src_rank=src).split("\n", 1)
    error = rebuild_error(type_name, f"rank {src}: {message}", known)
    if rank == src:
        raise error from failure
    raise error
