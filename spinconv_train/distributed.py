"""Distributed helpers that also work when torch.distributed is not initialised.

Under ``torchrun`` the environment holds RANK / WORLD_SIZE / LOCAL_RANK; :func:`setup`
initialises the process group from it (gloo on CPU, nccl on CUDA). Everything else
degrades to the single-process case.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def initialized() -> bool:
    """True when a process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return get_rank() == 0


def setup(device: torch.device) -> bool:
    """Initialise the process group from torchrun's environment; return True if distributed."""
    if initialized():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def local_device(prefer_cpu: bool) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` when available and wanted, else CPU."""
    if prefer_cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place when distributed); return it."""
    if initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if initialized():
        dist.barrier()


def broadcast_object(obj: object | None) -> object:
    """Send a picklable object from rank 0 to every rank."""
    if not initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if initialized():
        dist.destroy_process_group()


def gather_objects(obj: object) -> list:
    """A list with every rank's ``obj`` (rank order); ``[obj]`` when not distributed."""
    if not initialized():
        return [obj]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
