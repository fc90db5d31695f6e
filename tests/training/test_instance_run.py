"""task=instance end to end, as a user runs it: ``segcli train task=instance`` on the synthetic
shapes, killed with SIGKILL after a checkpoint and resumed to the same run as one left alone; then
``segcli eval`` (COCO AP and the pasted masks' mIoU, per-image evidence), ``segcli predict`` (the
instance-id, semantic and overlay files and a COCO results JSON that pycocotools scores to eval's
AP), ``segcli compare``, ``runs`` and ``report`` on the runs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_user_error, segcli
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from training.test_resume import kill, start, wait_paused

from segcli.data.synthetic import SyntheticInstances
from segcli.metrics.coco import encode

RUN = [
    "task=instance",
    "trainer=debug",
    "dataset.num_train=8",
    "dataset.num_val=4",
    "dataset.num_test=4",
    "dataset.image_size=[64,64]",
    "dataset.crop_size=[64,64]",
    "trainer.epochs=2",
    "trainer.deterministic=true",
    "trainer.checkpoint_minutes=1e-6",
    "+model.params.box_score_thresh=0.0",  # every detection, so that a 2-epoch model has some
]
TIMING = {"epoch_seconds", "train_images_per_second", "val_seconds"}


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def runs(module_tmp) -> dict[str, Path]:
    """A run left alone and the same run killed after its first checkpoint and resumed."""
    root = module_tmp("instance")
    ref, killed = root / "outputs" / "ref", root / "outputs" / "killed"
    r = segcli("train", *RUN, f"hydra.run.dir={ref}", cwd=root)
    assert r.returncode == 0, r.stderr
    proc = start("train", *RUN, f"hydra.run.dir={killed}", cwd=root, pause="checkpoint:1:1")
    wait_paused(proc, root, "checkpoint:1:1")
    kill(proc)
    assert not (killed / "summary.json").exists()
    r = segcli("train", "--resume", str(killed), cwd=root)
    assert r.returncode == 0, r.stderr
    assert "resuming at epoch 1, step 1" in r.stdout
    return {"root": root, "ref": ref, "killed": killed}


def test_train_writes_an_instance_run_and_resume_after_sigkill_gives_the_same_run(runs):
    ref, killed = runs["ref"], runs["killed"]
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["status"] == "done" and summary["task"] == "instance"
    assert summary["key_metric"] == "mask_ap"
    assert {"mask_ap", "mask_ap50", "box_ap", "miou", "per_class_mask_ap"} <= set(summary["val"])
    lines = records(ref)
    assert [x["epoch"] for x in lines] == [1, 2]
    assert all("val_mask_ap" in x and "val_box_ap" in x for x in lines)
    assert records(killed) == lines  # the same losses and scores, epoch by epoch
    import torch

    ckpt = torch.load(ref / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["task"] == "instance" and ckpt["category_ids"] == [1, 2, 3]
    assert ckpt["classes"]["class_names"] == ["background", "disc", "square", "triangle"]
    assert ckpt["config"]["model"]["arch"] == "maskrcnn_resnet18_fpn"
    assert set(ckpt["normalization"]) == {"mean", "std"}
    samples = cv2.imread(str(ref / "samples" / "best.png"))  # image | objects | detections rows
    assert samples is not None and samples.shape[1] == 3 * 64


def _coco_gt(source: SyntheticInstances, folder: Path) -> Path:
    """The synthetic test images as PNG files and their objects as a COCO JSON (ids 1..N)."""
    images, annotations = [], []
    for i in range(len(source)):
        image, ann = source.load(i)
        cv2.imwrite(str(folder / source.file_name(i)), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        h, w = image.shape[:2]
        images.append({"id": i + 1, "file_name": source.file_name(i), "height": h, "width": w})
        for rle, label, mask in zip(encode(ann.masks), ann.labels, ann.masks):
            ys, xs = np.nonzero(mask)
            box = [
                int(xs.min()),
                int(ys.min()),
                int(xs.max() - xs.min() + 1),
                int(ys.max() - ys.min() + 1),
            ]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "segmentation": rle,
                    "area": int(mask.sum()),
                    "bbox": box,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k, "name": n} for k, n in enumerate(source.class_names[1:], 1)]
    path = folder / "test.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def test_eval_and_predict_agree_with_pycocotools_on_the_results_json(runs):
    root, ref = runs["root"], runs["ref"]
    r = segcli("eval", str(ref / "checkpoints" / "best.pt"), "--split", "test", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "mask AP" in r.stdout and "AP50" in r.stdout
    result = json.loads((ref / "evals" / "best-test.json").read_text())
    assert result["images"] == 4 and {"mask_ap", "box_ap", "miou", "mdice"} <= set(result)
    evidence = np.load(ref / "evals" / "best-test.npz")
    assert evidence["matrices"].shape == (4, 4, 4)  # one pasted-mask confusion matrix per image
    detections = json.loads((ref / "evals" / "best-test-detections.json").read_text())

    folder = root / "test-images"
    folder.mkdir()
    gt = _coco_gt(SyntheticInstances(4, (64, 64), "test"), folder)
    out = root / "predictions"
    r = segcli(
        "predict",
        str(folder / "*.png"),
        "-c",
        str(ref / "checkpoints" / "best.pt"),
        "-o",
        str(out),
        "--coco-json",
        str(gt),
        "--score-threshold",
        "0",
        cwd=root,
    )
    assert r.returncode == 0, r.stderr
    predicted = json.loads((out / "detections.json").read_text())
    assert len(predicted) == len(detections)
    assert all(p["file_name"].startswith("test_") and 1 <= p["image_id"] <= 4 for p in predicted)
    for name in ("test_00000.png", "test_00000_instances.png", "test_00000_overlay.jpg"):
        assert (out / name).is_file()
    ids = cv2.imread(str(out / "test_00000_instances.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and ids.shape == (64, 64)
    semantic = cv2.imread(str(out / "test_00000.png"), cv2.IMREAD_UNCHANGED)
    assert semantic.shape == (64, 64) and semantic.max() <= 3

    assert predicted  # pycocotools on predict's results reproduces eval's AP
    segm = [{k: v for k, v in p.items() if k != "bbox"} for p in predicted]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        e = COCOeval(coco, coco.loadRes(segm), "segm")
        e.evaluate(), e.accumulate(), e.summarize()
    assert result["mask_ap"] > 0
    assert e.stats[0] == pytest.approx(result["mask_ap"], abs=1e-6)


def test_compare_runs_and_report_work_on_instance_runs(runs):
    root, ref, killed = runs["root"], runs["ref"], runs["killed"]
    r = segcli("compare", str(ref), str(killed), "--split", "test", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "ref" in r.stdout and "killed" in r.stdout
    r = segcli("runs", str(root / "outputs"), cwd=root)
    assert r.returncode == 0, r.stderr
    assert "ref" in r.stdout and "killed" in r.stdout
    r = segcli("report", str(ref), "-o", str(root / "report.html"), cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root / "report.html").is_file()


def test_semantic_only_options_are_refused_for_an_instance_checkpoint(runs):
    root, best = runs["root"], str(runs["ref"] / "checkpoints" / "best.pt")
    r = segcli("export", best, "-o", str(root / "bundle"), cwd=root)
    assert_user_error(r, "a task=instance checkpoint; segcli export writes semantic models only")
    assert not (root / "bundle").exists()
    r = segcli("eval", best, "--worst", "2", cwd=root)
    assert_user_error(r, "--worst draws semantic models' worst images only")
    image = root / "one.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    r = segcli("predict", str(image), "-c", best, "--save-probs", "-o", str(root / "p"), cwd=root)
    assert_user_error(r, "--save-probs and --inference other than whole are options of semantic")
