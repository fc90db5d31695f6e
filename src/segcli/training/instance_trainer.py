"""The training run of ``task=instance``: ``InstanceTrainer`` is the CNN ``trainer.Trainer`` (the
same phases, run folder, checkpoints, resume, budget and loggers) with the instance task's parts:

    data         data/instance_datasets.py (COCO JSON, labelme, VOC, Cityscapes, synthetic)
    model        models/instance.py (torchvision's Mask R-CNN)
    loss         the model's own: torchvision's Mask R-CNN returns its multi-task loss dict in
                 train mode (RPN objectness + box, classifier, box regression, mask BCE; He et
                 al. 2017); the step minimises their sum, so the ``loss`` group is ``maskrcnn``
    validation   inference/instance_loop.py: COCO mask/box AP and the pasted masks' mIoU; the
                 best epoch is the one of the highest val mask AP

Crowd regions (COCO ``iscrowd=1``) are left out of the training targets, as torchvision's detection
references do (Mask R-CNN has no ignore regions), and scored as COCO does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from segcli.data.instance_datasets import build_instance_datasets, instance_collate
from segcli.data.loaders import make_loader
from segcli.errors import SegcliError
from segcli.inference.instance_loop import AP_KEYS, evaluate_instances
from segcli.models.instance import build_instance_model
from segcli.runtime import StepContext, step_context
from segcli.training.engine import Budget
from segcli.training.optim import LrSchedule
from segcli.training.trainer import Trainer


def training_targets(targets: list[dict], device: torch.device) -> list[dict]:
    """The targets torchvision's Mask R-CNN trains on: crowd regions dropped, on ``device``
    (``boxes (K, 4) float32``, ``labels (K,) int64``, ``masks (K, H, W) uint8``)."""
    out = []
    for t in targets:
        keep = ~t["iscrowd"].bool()
        out.append(
            {
                "boxes": t["boxes"][keep].float().to(device),
                "labels": t["labels"][keep].long().to(device),
                "masks": t["masks"][keep].to(device),
            }
        )
    return out


@dataclass
class InstanceStep:
    """One optimizer step of Mask R-CNN, with ``engine.TrainStep``'s arguments and interface: the
    loss is the sum of the model's loss dict (``loss_fn`` is None)."""

    model: nn.Module
    loss_fn: None
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    ctx: StepContext
    scaler: torch.amp.GradScaler | None = None
    grad_clip: float | None = None

    def __call__(self, batch: dict, step: int, budget: Budget) -> tuple[int, float]:
        """One step on ``batch`` (``instance_collate``'s); returns (N, the summed loss).

        Raises:
            FloatingPointError: the loss is NaN or infinite (the message names the step, 1-based).
        """
        self.schedule.apply(self.optimizer, step, budget.clock(), budget.deadline)
        x = self.ctx.images(batch)
        targets = training_targets(batch["targets"], self.ctx.device)
        with self.ctx.autocast():
            losses = self.model(list(x), targets)
        loss = sum(v.float() for v in losses.values())
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return x.shape[0], value


class InstanceTrainer(Trainer):
    """One ``task=instance`` training run in ``run_path`` (arguments as ``Trainer``'s);
    ``.fit()`` runs it and returns summary.json's dict.

    Raises:
        SegcliError: bad data or config, a NaN/inf loss, out of memory, or torchrun (not
            supported for instances yet).
        RunInterrupted: as ``Trainer``.
    """

    task = "instance"
    key_metric = "mask_ap"
    record_keys = ("mask_ap", "mask_ap50", "box_ap")

    def _build_data(self) -> None:
        s, ddp = self.settings, self.ddp
        if ddp.enabled:
            raise SegcliError("task=instance under torchrun: not supported yet; run one process")
        self.info, self.data, self.counts = build_instance_datasets(
            self.cfg, ("train", "val"), self.seed
        )
        self.ctx = step_context(asdict(s), 1.0, None)
        self.loaders = {}
        for split, d in self.data.items():
            loader = make_loader(
                d,
                s.batch_size if split == "train" else s.eval_batch_size,
                split == "train",
                s.num_workers,
                255,
                self.seed,
                self.ctx.device.type == "cuda",
            )
            loader.collate_fn = instance_collate
            self.loaders[split] = loader
        if len(self.data["train"]) == 0 or len(self.data["val"]) == 0:
            raise SegcliError(
                f"the dataset has {len(self.data['train'])} training and {len(self.data['val'])} "
                "validation images; expected at least one of each"
            )
        self.category_ids = list(self.data["train"].source.category_ids)

    def _build_net(self) -> nn.Module:
        return build_instance_model(self.cfg["model"], self.info.num_classes)

    step_kind = InstanceStep

    def _build(self) -> None:
        super()._build()
        self.base["category_ids"] = self.category_ids  # COCO results use the dataset's own ids

    def _build_loss(self) -> None:
        """None: the model computes its own losses (the module docstring)."""

    def _evaluate_val(self, stop_requested):
        return evaluate_instances(
            self.eval_net,
            self.loaders["val"],
            self.info.class_names,
            self.category_ids,
            self.ctx,
            float(self.cfg["task"].get("mask_threshold", 0.5)),
            stop_requested=stop_requested,
        )

    def _save_samples(self) -> None:
        """No sample sheet for instances yet (``segcli predict`` draws them)."""


__all__ = ["AP_KEYS", "InstanceTrainer"]
