"""Joining torchrun's process group: the one place a training command becomes one rank of several.

``torchrun --nproc_per_node=2 -m convlens train --data lfw --strategy features --out RUN`` starts one
process per rank running the ordinary ``convlens train`` command; :func:`process_group` makes each join
the group (gloo on CPU, nccl on CUDA with each rank on ``cuda:LOCAL_RANK``), so the training loop wraps
the model in DistributedDataParallel on its ``DistributedSampler`` share and rank 0 alone writes the
run folder. Without torchrun (``WORLD_SIZE`` unset or 1) nothing happens.

Example:
    >>> with process_group("cpu") as (device, rank):
    ...     device, rank
    ('cpu', 0)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["process_group"]


@contextmanager
def process_group(device: str) -> Iterator[tuple[str, int]]:
    """Inside torchrun (``WORLD_SIZE`` > 1): join the process group for the block and leave it after,
    even on errors; yields ``(device, rank)`` (a CUDA device becomes this rank's ``cuda:LOCAL_RANK``).
    Outside torchrun: yields ``(device, 0)``. ``init_process_group`` waits for every rank, so whatever
    a rank checks before entering happens before any rank writes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield device, 0
        return
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        yield device, dist.get_rank()
    finally:
        dist.destroy_process_group()
