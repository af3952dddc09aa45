"""Several GPUs (or CPU processes) through PyTorch's own engine: torchrun + DDP.

``torchrun --nproc_per_node=N -m ulmfit.cli.main pretrain ...`` sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; :func:`init_from_env` turns them into a process group
(NCCL on GPUs, gloo on CPU). Each rank then reads its own rows of the LM stream (or
its own classifier batches), DDP averages gradients in backward, training metrics are
summed across ranks, validation is shared out (each rank scores its part of the
validation set, and the sums are reduced), and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

if dist.is_available():
    # Imported before any process group exists, on purpose. This torch module binds
    # ``group=group.WORLD`` as argument defaults when first imported, and DDP imports it:
    # imported after init_process_group, those defaults keep the world group alive past
    # destroy_process_group(), gloo's threads run on, and interpreter teardown frees the
    # group at last, where the process can abort ("terminate called without an active
    # exception") after its work is done.
    import torch.distributed.nn.functional


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo()


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's variables, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return current()


def device_for(info: DistInfo, device: str) -> str:
    """Each rank on its own GPU under torchrun; otherwise ``device`` as given."""
    if info.world_size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (a no-op outside a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (a no-op outside a process group).

    DDP broadcasts buffers at the start of each forward, so after an epoch's last step
    every rank holds batch-norm statistics updated by its own last batch: evaluating
    then would score slightly different models on different ranks.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for b in module.buffers():
            dist.broadcast(b.data, 0)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. filling a cache), then the others."""
    info = current()
    if info.world_size > 1 and not info.is_main:
        dist.barrier()
    yield
    if info.world_size > 1 and info.is_main:
        dist.barrier()


def shutdown(clean: bool = True) -> None:
    """Leave the process group before the interpreter exits (a no-op outside one).

    Left to interpreter teardown, the group is freed in a half-finalized interpreter, and
    the process can abort there ("terminate called without an active exception") after
    its work is done; destroyed here, gloo's threads end now (nothing else holds the
    group: see the import at the top). ``clean``: every rank got here without an error,
    so wait for the others first; after an error a barrier could wait forever, so leave
    at once.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()
