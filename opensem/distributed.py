"""Several processes, one job: what torchrun (or `accelerate launch`) tells each process, and the
few collective steps the stages take together.

torchrun starts one process per GPU (or per CPU slot with gloo) and gives each RANK, LOCAL_RANK
and WORLD_SIZE; a plain `opensem train` has none of them and is a world of one, where every
function here does nothing. The stages use it so that:
- training runs as DistributedDataParallel through the Trainer (which joins the process group
  itself), with rank 0 alone writing MLflow runs, the adapter and its files;
- answering a golden set is split across the ranks and gathered back in order, so the judge
  (on rank 0 only: an LLM judge is paid once) sees exactly what one process would have answered.

The process group is the one accelerate's PartialState makes (gloo on CPU, NCCL on GPUs), the
same object the Trainer uses, so joining it early (to agree on a run name) and training later
share one group.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

T = TypeVar("T")

# Long enough for rank 0's slow solo steps (saving and logging the model, a forge) while the
# other ranks wait at a barrier; gloo's and NCCL's own default (10-30 minutes) is not.
GROUP_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that talks to MLflow and writes the stage's outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place, as the launcher set it in the environment (torchrun, accelerate
    launch, SkyPilot's run script through torchrun)."""
    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    size = max(1, number("WORLD_SIZE", 1))
    return World(rank=number("RANK", 0) if size > 1 else 0, local_rank=number("LOCAL_RANK", 0) if size > 1 else 0, size=size)


def join() -> None:
    """Join the launcher's process group (once; a world of one has none). On GPUs each process
    takes the GPU of its local rank, so "cuda" means that one from here on."""
    if not world().distributed:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    from accelerate import PartialState

    PartialState(timeout=GROUP_TIMEOUT)
    atexit.register(_leave)


def _leave() -> None:
    """Leave the group before the interpreter exits: a process that exits with gloo's threads
    still running can abort ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _group_ready() -> bool:
    if not world().distributed:
        return False
    join()
    return True


def broadcast(value: T) -> T:
    """Rank 0's value, on every rank (a run name, a resume decision)."""
    if not _group_ready():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any: a decision all ranks must take at the same step
    (stopping on SIGTERM), or one would wait forever for the others at the next all-reduce."""
    if not _group_ready():
        return flag
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    box = torch.tensor([1 if flag else 0], device=PartialState().device)  # NCCL reduces GPU tensors only
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def shard_map(fn: Callable[[list], list], items: list) -> list:
    """fn over items, the items split across the ranks (rank r takes items r, r + size, ...) and
    the results gathered back in the items' order, on every rank. fn must return one result per
    item. In a world of one this is fn(items)."""
    w = world()
    if not _group_ready():
        return fn(items)
    import torch.distributed as dist

    mine = fn(items[w.rank::w.size])
    if len(mine) != len(items[w.rank::w.size]):
        raise RuntimeError(f"rank {w.rank}: {len(mine)} results for {len(items[w.rank::w.size])} items")
    gathered: list[list] = [[] for _ in range(w.size)]
    dist.all_gather_object(gathered, mine)
    ordered: list = [None] * len(items)
    for rank, results in enumerate(gathered):
        ordered[rank::w.size] = results
    return ordered
