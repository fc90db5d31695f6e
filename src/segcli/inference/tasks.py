"""What eval and predict do differently per task (the checkpoint's ``"task"``, src/segcli/tasks.py):
one ``TaskInference`` per task in ``TASKS``, so that a third task is one more class here, not a
branch at each call site. Each gives

    datasets(loaded, splits, data_root)   the checkpoint's data with its eval pipeline
    collate                               samples -> batch for ``segcli eval``'s loader
    evaluate(job, settings, hd95, probs)  ``segcli eval``'s loop on a split: (result, extra)
    predict(request)                      ``segcli predict``: files written, paths returned

The implementations live beside the task's other inference code (evaluation.py / predict.py for
semantic models, instance_loop.py / instance_predict.py for instances) and are imported when
called, so that ``segcli predict`` loads no dataset code and this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from segcli.registry import Registry


@dataclass(frozen=True)
class PredictRequest:
    """``segcli predict``'s arguments: the checkpoint (or an ONNX bundle, semantic only), the image
    files, the output folder, device, autocast, the inference settings (``modes``), and the
    options of one task (``save_probs``: semantic; ``score_threshold``, ``coco_json``: instance),
    which the other task refuses; ``window``, ``margin``: GeoTIFF scenes' blocks (semantic,
    inference/raster.py)."""

    checkpoint: Path
    files: list[Path]
    out_dir: Path
    device: str = "auto"
    amp: str | None = None
    settings: object = None
    save_probs: bool = False
    score_threshold: float | None = None
    coco_json: Path | None = None
    window: int = 1024
    margin: int = 128


class TaskInference:
    """The inference parts of one task (see the module docstring); ``exports``: ``segcli export``
    writes its models; ``draws_worst``: ``segcli eval --worst`` draws its worst images."""

    collate: Callable | None = None
    exports = True
    draws_worst = True

    def datasets(self, loaded, splits: Sequence[str], data_root: str | None) -> dict:
        raise NotImplementedError

    def evaluate(self, job, settings, hd95: bool, probs_dir: Path | None) -> tuple:
        raise NotImplementedError

    def predict(self, request: PredictRequest) -> list[Path]:
        raise NotImplementedError


class SemanticInference(TaskInference):
    """Semantic models: ``data.datasets``, ``loop.evaluate``, ``predict.Predictor``."""

    def datasets(self, loaded, splits, data_root):
        return loaded.semantic_datasets(splits, data_root)

    def evaluate(self, job, settings, hd95, probs_dir):
        return job.run_semantic(settings, hd95, probs_dir)

    def predict(self, request):
        from segcli.inference.predict import predict_checkpoint

        return predict_checkpoint(request)


class InstanceInference(TaskInference):
    """task=instance: ``data.instance_datasets``, ``instance_loop.evaluate_instances``,
    ``instance_predict``; no export and no worst-image gallery yet."""

    exports = False
    draws_worst = False

    @property
    def collate(self):
        from segcli.data.instance_datasets import instance_collate

        return instance_collate

    def datasets(self, loaded, splits, data_root):
        from segcli.config import run_seed
        from segcli.data.instance_datasets import build_instance_datasets

        cfg = loaded.config
        if data_root is not None:
            cfg = {**cfg, "dataset": {**cfg["dataset"], "root": str(data_root)}}
        normalization = loaded.preprocessing.normalization
        return build_instance_datasets(cfg, tuple(splits), run_seed(cfg), (), normalization)[1]

    def evaluate(self, job, settings, hd95, probs_dir):
        from segcli.inference.instance_loop import evaluate_checkpoint_instances

        return evaluate_checkpoint_instances(job, settings, hd95, probs_dir)

    def predict(self, request):
        from segcli.inference.instance_predict import predict_instances

        return predict_instances(request)


TASKS: Registry[TaskInference] = Registry("checkpoint", key="task")
TASKS.add(SemanticInference(), ["semantic"])
TASKS.add(InstanceInference(), ["instance"])


def inference_of(task: str) -> TaskInference:
    """The ``TaskInference`` of a checkpoint's task.

    Raises:
        SegcliError: an unknown task (``checkpoint.task=X: expected one of ...``).
    """
    return TASKS.get(task)
