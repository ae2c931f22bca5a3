"""Several processes (``accelerate launch`` or torchrun): who this process is, and sums and means over processes."""

from __future__ import annotations

import os

import torch


def distributed() -> tuple[int, int]:
    """(rank, world size). Under ``accelerate launch`` (or torchrun) joins the process group through
    accelerate's ``PartialState`` (gloo on CPU, NCCL on GPU); otherwise (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()
    return dist.get_rank(), dist.get_world_size()


def all_reduce(t: torch.Tensor, world: int, mean: bool) -> torch.Tensor:
    """Sum (or mean) of ``t`` over processes, returned on ``t``'s device. NCCL reduces only CUDA tensors, so
    CPU tensors (read counts, the loss) travel through this process's GPU there."""
    if world == 1:
        return t
    import torch.distributed as dist

    on = t.device
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(t)
    if mean:
        t = t / world
    return t.to(on)


def all_reduce_mean(t: torch.Tensor, world: int) -> torch.Tensor:
    return all_reduce(t, world, mean=True)


def all_reduce_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    return all_reduce(t, world, mean=False)


def broadcast_object(obj, world: int):
    """Process 0's ``obj`` on every process (a picklable object; ``world`` 1: ``obj`` itself)."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
