"""Training on several processes with torch's own engine: ``torchrun --nproc_per_node=N -m segcli
train ...`` runs one segcli process per GPU (or CPU process) with DistributedDataParallel.

- The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``PORT``): NCCL for CUDA tensors and gloo for the CPU (``cpu:gloo,cuda:nccl``
  where CUDA exists, gloo alone otherwise), so multi-node runs work as torchrun sets them up.
- Each rank trains on its shard of every epoch's permutation (``data.loaders.EpochSampler`` with
  rank/world: the padding and interleaving of torch's DistributedSampler, on segcli's
  (epoch, index) keys so that augmentation stays a function of the sample); ``trainer.batch_size``
  is per process. Validation shards the split without padding; the confusion matrices, losses and
  image counts of the ranks are summed (``reduce_eval``), so val mIoU is that of the whole split.
- Only rank 0 writes the run folder (checkpoints, metrics, summary, samples, loggers); every rank
  uses rank 0's run folder (``broadcast``) to resume from. Stops (Ctrl-C, SIGTERM, the time budget)
  are agreed on by all ranks after each step (``any``), so no rank waits for another forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (returned)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, True if it is True on any rank (one all-reduce for all of them)."""
        if not self.enabled:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them
        at the start of each training forward, so after the last step every rank holds its own
        update; validation must use the weights rank 0 saves."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (picklable objects)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> Distributed:
    """Join the process group torchrun describes (once) and return this process's place, which the
    caller passes on (``jobs.run_job``); a single process (no WORLD_SIZE > 1) gets rank 0 of 1."""
    if not launched_by_torchrun():
        return Distributed()
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Distributed(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    )


def shutdown() -> None:
    """Leave the process group (at the end of a distributed run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_eval(ev, d: Distributed):
    """An ``inference.loop.EvalResult`` of the whole split from each rank's shard: confusion
    matrices, summed losses and image counts added over the ranks, scores recomputed (the same on
    every rank)."""
    if not d.enabled or ev is None:
        return ev
    from dataclasses import replace

    d.all_sum(ev.matrix.matrix)
    loss_sum = (ev.loss or 0.0) * ev.images
    totals = d.all_sum(
        torch.tensor(
            [loss_sum, float(ev.images)], dtype=torch.float64, device=ev.matrix.matrix.device
        )
    )
    images = int(totals[1].item())
    return replace(
        ev,
        scores=ev.matrix.compute(),
        images=images,
        loss=None if ev.loss is None else float(totals[0].item()) / max(images, 1),
    )


def shared_run_dir(ddp: Distributed, own: Path) -> Path:
    """Rank 0's run folder for every rank of ``torchrun -m segcli train``; the other ranks' own
    Hydra folders (throw-away temporary ones) are removed."""
    import shutil

    shared = Path(ddp.broadcast(str(Path(own).resolve())))
    if not ddp.main:
        shutil.rmtree(own, ignore_errors=True)
    return shared
