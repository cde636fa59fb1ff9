"""The two collectives the planner needs: sum statistics, broadcast the plan as JSON.

Everything is sent as tensors (float64 sums; the plan's UTF-8 JSON bytes as uint8), so
no pickling is involved and every rank decodes the same bytes into the same plan.
"""

import torch


def resolve_group(process_group):
    """``(group, rank, world_size)``; group None means "not distributed".

    ``process_group="auto"`` uses the default group when torch.distributed is
    initialised with more than one rank; ``None`` forces single-process planning.
    """
    import torch.distributed as dist
    if process_group is None or not (dist.is_available() and dist.is_initialized()):
        return None, 0, 1
    group = dist.group.WORLD if process_group == "auto" else process_group
    world = dist.get_world_size(group)
    if world == 1:
        return None, 0, 1
    return group, dist.get_rank(group), world


def _device_for(group):
    import torch.distributed as dist
    backend = dist.get_backend(group)
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" \
        else torch.device("cpu")


def all_reduce_sum(tensor, group):
    """Sum ``tensor`` over the ranks of ``group`` (returns a new CPU float64 tensor)."""
    if group is None:
        return tensor
    import torch.distributed as dist
    buf = tensor.to(device=_device_for(group), dtype=torch.float64).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf.cpu()


def broadcast_text(text, group, src_rank=0):
    """Send ``text`` (str on ``src_rank``, ignored elsewhere) to every rank; returns it."""
    if group is None:
        return text
    import torch.distributed as dist
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
