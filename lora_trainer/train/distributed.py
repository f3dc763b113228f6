"""Training on several GPUs (or CPU processes) with DistributedDataParallel.

`torchrun --nproc_per_node N -m lora_trainer train ...` starts N processes; torchrun sets RANK,
WORLD_SIZE and LOCAL_RANK, and `init_from_env` joins them (NCCL on CUDA, gloo on the CPU). Each
process loads its own copy of the model; only the LoRA parameters are wrapped in DDP (the model
they hook into is held outside the wrapped module, so DDP neither broadcasts nor watches its
billions of frozen tensors).

How the work is split (loop.py): the batches of an epoch are numbered k = 0, 1, ... in the data's
seeded order. With N processes and gradient accumulation A, optimizer step s takes the N*A
batches s*N*A ... s*N*A + N*A - 1; process r takes those with (k mod N*A) mod N == r, one per
micro-step. Every random draw of a batch (noise, timesteps, the VAE sample, captions, flips) is
seeded from (seed, epoch, k), never from the process, and each micro-batch's loss is divided by
A before DDP averages the N gradients. So:

    N processes x accumulation A  ==  1 process x accumulation N*A

for the same batch size: the same batches, the same noise, the same averaged gradient, the same
LR schedule (steps per epoch = ceil(batches / (N*A)) in both), equal up to the order of float
additions in the all-reduce. (LoRA dropout draws from the global RNG, which is seeded per batch
as well, so it holds with dropout too.) Measured in tests/test_train_ddp.py: 2 gloo processes vs
1 process with accumulation 2 log the same losses to 6 digits; the LoRA weights differ by < 1e-4
after 6 AdamW steps at lr 2e-3 (Adam's 1/sqrt(v) magnifies rounding where a gradient is ~0). It is not the same as 1 process with batch N*b: kohya's
batches come from one bucket each, and a bigger batch is a different split of the data.

At the end of an epoch, process 0 alone writes the LoRA file, the state and the samples, and the
others wait at a barrier; only process 0 writes the loss log and sends progress events.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank r of world_size, on device `device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE = DistInfo()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun described in the environment (no-op for one process).

    backend None: "nccl" when CUDA is available, else "gloo". On CUDA each process uses
    cuda:LOCAL_RANK.
    """
    world = env_world_size()
    if world <= 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank)


def current() -> DistInfo:
    """The DistInfo of an already initialised process group (SINGLE when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return SINGLE


def device_for(info: DistInfo) -> torch.device:
    """cuda:LOCAL_RANK with CUDA, else the CPU."""
    return torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def wrap(module: nn.Module, info: DistInfo, device: torch.device, find_unused: bool = False) -> nn.Module:
    """DDP over `module`'s parameters (the LoRA); the module itself when there is one process.

    find_unused: some LoRA parameters may get no gradient in a step. That is the case when the
    text encoders are trained: the layers after the one the UNet reads (CLIP skip 2, SDXL's
    penultimate CLIP-L layer) have LoRA modules, as in kohya's files, that nothing trains.
    """
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # broadcast_buffers: the LoRA's only buffers are the alphas, identical everywhere.
    return DDP(module, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused)


def no_sync(module: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """Inside accumulation micro-steps, skip DDP's all-reduce (the last micro-step does it)."""
    if skip and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a small tensor over processes (for the logged loss and the NaN check)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(value, info: DistInfo, src: int = 0):
    """Rank `src`'s value on every process (e.g. the session id and start time of a run)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def process_group(info: DistInfo) -> Iterator[DistInfo]:
    """Tear the process group down on the way out (torchrun's processes end right after)."""
    try:
        yield info
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()
