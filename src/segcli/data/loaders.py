"""Samples -> batches: the epoch-keyed sampler (``EpochSampler``: seeded order, resumable, sharded
under torchrun), padding collation (``pad_collate``), worker set-up and ``make_loader``, the one
DataLoader recipe of training, validation, ``segcli eval`` and ``segcli bench``.
"""

from __future__ import annotations

import functools
import random
import signal
import sys
from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: a permutation that depends only on (seed, epoch) when
    shuffling, else 0..n-1, after skipping the first ``skip`` keys (to resume inside an epoch).

    With ``world > 1`` (torchrun) it yields rank ``rank``'s shard, as torch's DistributedSampler
    does: the order padded by repeating its start to a multiple of ``world`` when ``pad`` (training:
    every rank takes the same number of steps), then every ``world``-th key from ``rank``; without
    ``pad`` (evaluation) nothing is repeated, so summed results count each sample once. Written here
    rather than using DistributedSampler because segcli's keys carry the epoch (augmentation is a
    function of (seed, epoch, index)); ``skip`` counts keys of this rank's shard.

    Call ``set_epoch`` before iterating. Used with a DataLoader's ``batch_size``/``drop_last``.
    """

    def __init__(
        self,
        length: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world: int = 1,
        pad: bool | None = None,
    ) -> None:
        self.length, self.seed, self.shuffle = int(length), int(seed), bool(shuffle)
        self.rank, self.world = int(rank), int(world)
        self.pad = self.shuffle if pad is None else bool(pad)
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch ``epoch`` (1-based) from its ``skip``-th sample on."""
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self) -> list[int]:
        """The epoch's sample indices, before skipping."""
        if not self.shuffle:
            return list(range(self.length))
        g = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        )
        return torch.randperm(self.length, generator=g).tolist()

    def shard(self) -> list[int]:
        """This rank's indices of the epoch, before skipping."""
        order = self.order()
        if self.world == 1:
            return order
        if self.pad and order:
            total = -(-len(order) // self.world) * self.world
            order = (order * (total // len(order) + 1))[:total]
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.shard()[self.skip :]])

    def __len__(self) -> int:
        if self.world == 1:
            size = self.length
        elif self.pad:
            size = -(-self.length // self.world)
        else:
            size = len(range(self.rank, self.length, self.world))
        return max(size - self.skip, 0)


def pad_collate(batch: list[dict], ignore_index: int) -> dict:
    """Stack samples of different sizes, padding bottom/right: image with 0, mask with ignore_index.

    Returns:
        ``{"image": (N, 3, H, W) float32, "mask": (N, H, W) int64, "name": list[str],
        "size": list[(h, w)]}``, with H, W the largest in the batch and ``size`` each sample's as
        read (pixels, before the transform).
    """
    h = max(s["image"].shape[-2] for s in batch)
    w = max(s["image"].shape[-1] for s in batch)
    images = torch.zeros(
        len(batch), batch[0]["image"].shape[0], h, w, dtype=batch[0]["image"].dtype
    )
    masks = torch.full((len(batch), h, w), ignore_index, dtype=torch.int64)
    for i, s in enumerate(batch):
        sh, sw = s["image"].shape[-2:]
        images[i, :, :sh, :sw] = s["image"]
        masks[i, :sh, :sw] = s["mask"]
    return {
        "image": images,
        "mask": masks,
        "name": [s["name"] for s in batch],
        "size": [tuple(int(v) for v in s.get("size", s["image"].shape[-2:])) for s in batch],
    }


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: no OpenCV threads (the cores belong to the model), and signals
    left to the main process, which stops cleanly on Ctrl-C/SIGTERM (see training/interrupts.py); a
    worker that died of Ctrl-C would break the batch the main process still needs."""
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32  # torch gives each worker base_seed + worker_id
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(
        signal.SIGTERM, signal.SIG_IGN
    )  # workers exit when the main process shuts them down


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int,
    ignore_index: int,
    seed: int,
    pin_memory: bool = False,
    rank: int = 0,
    world: int = 1,
    collate: Callable[[list[dict]], dict] | None = None,
) -> DataLoader:
    """A DataLoader over ``EpochSampler`` keys: shuffled per (seed, epoch) and the last
    incomplete batch dropped for training (BatchNorm needs > 1 sample); in order and complete for
    evaluation. Workers persist across epochs. ``loader.sampler.set_epoch(e, skip)`` picks the
    epoch.
    ``rank``/``world``: this process's shard under torchrun (see EpochSampler). ``collate``:
    samples -> batch (default ``pad_collate`` with ``ignore_index``; task=instance:
    ``instance_datasets.instance_collate``)."""
    sampler = EpochSampler(len(dataset), seed, shuffle=train, rank=rank, world=world)
    # Linux: fork, as torch does by default, named explicitly because a job that Hydra's joblib
    # launcher runs in a loky process inherits loky's start method, whose Process cannot start
    # DataLoader workers ("'Process' object has no attribute 'env'")
    context = "fork" if num_workers > 0 and sys.platform.startswith("linux") else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train and len(sampler) > batch_size,
        num_workers=num_workers,
        collate_fn=collate or functools.partial(pad_collate, ignore_index=ignore_index),
        pin_memory=pin_memory,
        worker_init_fn=worker_init,
        persistent_workers=num_workers > 0,
        multiprocessing_context=context,
        generator=torch.Generator().manual_seed(
            seed
        ),  # workers' base seed: not drawn from the global RNG
    )
