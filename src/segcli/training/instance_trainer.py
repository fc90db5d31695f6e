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

import torch
from torch import nn

from segcli.data.instance_datasets import build_instance_datasets, instance_collate
from segcli.errors import SegcliError
from segcli.inference.instance_loop import evaluate_instances
from segcli.inference.instance_predict import save_instance_samples
from segcli.models.instance import build_instance_model
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from segcli.training.engine import TrainStep
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


class InstanceStep(TrainStep):
    """One optimizer step of Mask R-CNN: ``engine.TrainStep`` whose loss is the sum of the
    model's loss dict (``loss_fn`` is None)."""

    def loss_of(self, batch: dict) -> tuple[int, torch.Tensor]:
        """(N, the summed loss) of ``batch`` (``instance_collate``'s), crowd regions dropped from
        the targets; each loss term in float32."""
        x = self.ctx.images(batch)
        targets = training_targets(batch["targets"], self.ctx.device)
        with self.ctx.autocast():
            losses = self.model(list(x), targets)
        return x.shape[0], sum(v.float() for v in losses.values())


class InstanceTrainer(Trainer):
    """One ``task=instance`` training run in ``run_path`` (arguments as ``Trainer``'s);
    ``.fit()`` runs it and returns summary.json's dict.

    Raises:
        SegcliError: bad data or config, a NaN/inf loss, out of memory, or torchrun (not
            supported for instances yet).
        RunInterrupted: as ``Trainer``.
    """

    task, key_metric, record_keys = "instance", "mask_ap", ("mask_ap", "mask_ap50", "box_ap")
    collate = staticmethod(instance_collate)

    def _build_data(self) -> None:
        if self.ddp.enabled:
            raise SegcliError("task=instance under torchrun: not supported yet; run one process")
        if self.dataset.scale != 1.0:  # eval and predict would see another resolution
            raise SegcliError(
                f"dataset.scale={self.dataset.scale}: task=instance trains and scores at the "
                "images' resolution (1.0); resize the images, or crop with the augmentation"
            )
        super()._build_data()
        self.category_ids = list(self.data["train"].source.category_ids)

    def _build_datasets(self) -> tuple:
        return build_instance_datasets(self.cfg, ("train", "val"), self.seed)

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
        """samples/best.png: val images, their objects and the detections (``instance_predict``)."""
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        save_instance_samples(
            self.net,
            self.data["val"],
            self.settings.samples,
            self.ctx,
            self.info.class_names,
            mean,
            std,
            self.run.samples,
            mask_threshold=float(self.cfg["task"].get("mask_threshold", 0.5)),
        )
