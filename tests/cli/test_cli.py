"""The commands as a user runs them: a subprocess per command, checked by the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import (
    FAST,
    LEARNS,
    REPO,
    assert_user_error,
    segcli,
    whole_image_prediction,
    write_pair,
)

from segcli.tasks import options_for


def test_train_eval_predict_on_a_folder_dataset(segnet_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    # a small U-Net that learns the task (the red channel encodes the class): its predictions depend
    # on the input, so a preprocessing mismatch between eval, predict and validation would show
    r = segcli(
        "train",
        "dataset=camvid",
        f"dataset.root={segnet_root}",
        "dataset.num_classes=3",
        "dataset.class_names=[a,b,c]",
        "dataset.colors=[[255,0,0],[0,255,0],[0,0,255]]",
        "dataset.ignore_index=255",
        "trainer.epochs=12",
        f"hydra.run.dir={run_dir}",
        *FAST,
        *LEARNS,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(run_dir)

    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "encoder_name: resnet18" in config
    assert "trainer.epochs=12" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, 13))
    assert set(lines[0]) == {
        "epoch",
        "train_loss",
        "val_loss",
        "val_miou",
        "val_mdice",
        "lr",
        "epoch_seconds",
        "train_images_per_second",
        "val_seconds",
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"best_epoch", "train_seconds", "checkpoint", "val"} <= set(summary)
    assert Path(summary["checkpoint"]) == (run_dir / "checkpoints" / "best.pt").resolve()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    val = summary["val"]
    assert (
        set(val["per_class_iou"]) == {"a", "b", "c"} and val["miou"] >= 0.7
    )  # constant predictions: <= 0.12
    assert val["miou"] == max(x["val_miou"] for x in lines)

    # eval: the same code path as validation, so the same numbers for the best checkpoint
    r = segcli(
        "eval",
        summary["checkpoint"],
        "--json",
        "val.json",
        "--protocols",
        "--metrics",
        "fwiou,per_image_miou,hd95",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "val.json").read_text())
    assert ev["split"] == "val" and ev["images"] == 3
    assert ev["miou"] == pytest.approx(val["miou"], abs=1e-9)
    assert set(ev["protocols"]) == {
        "dataset",
        "dataset_absent_as_1",
        "dataset_no_background",
        "per_image",
        "micro",
        "frequency_weighted",
    }
    assert (
        ev["protocols"]["dataset"]["miou"] == ev["miou"]
        and ev["protocols"]["per_image"]["miou"] == ev["per_image_miou"]
    )
    assert (
        f"fwiou {ev['fwiou']:.4f}" in r.stdout
        and "micro" in r.stdout
        and "per_image_miou" in r.stdout
    )
    assert set(ev["per_class_hd95"]) == {"a", "b", "c"} and all(
        0 <= n <= 3 for n in ev["hd95_images"].values()
    )
    assert "hd95 " in r.stdout and " px " in r.stdout
    assert_user_error(
        segcli("eval", summary["checkpoint"], "--metrics", "hd42", cwd=tmp_path),
        "--metrics hd42: expected",
    )
    assert ev["per_class_dice"] == pytest.approx(val["per_class_dice"])
    assert "IoU" in r.stdout and "mean" in r.stdout
    r = segcli(
        "eval", summary["checkpoint"], "--split", "test", "--json", "test.json", cwd=tmp_path
    )
    assert r.returncode == 0 and json.loads((tmp_path / "test.json").read_text())["images"] == 2

    # predict at each image's own size, from the newest run under outputs/ when -c is absent
    write_pair(tmp_path / "photos", tmp_path / "unused", "odd", 37, 61, 3, seed=5)
    r = segcli(
        "predict", str(tmp_path / "photos"), "-c", summary["checkpoint"], "-o", "out", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    mask = cv2.imread(str(tmp_path / "out" / "odd.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (37, 61) and mask.dtype == "uint8" and mask.max() <= 2
    # the model's own forward on the whole image, padded bottom/right to 64x64 and cropped back
    assert np.array_equal(
        mask, whole_image_prediction(summary["checkpoint"], tmp_path / "photos" / "odd.jpg")
    )
    assert len(np.unique(mask)) == 3  # the stripes of all three classes are found
    overlay = cv2.imread(str(tmp_path / "out" / "odd_overlay.jpg"))
    assert overlay.shape == (37, 61, 3)


def test_default_run_directory_and_predict_without_checkpoint(tmp_path: Path):
    r = segcli(
        "train",
        "trainer.epochs=1",
        "dataset.num_train=8",
        "dataset.num_val=4",
        "dataset.image_size=[64,64]",
        "dataset.crop_size=[64,64]",
        *FAST,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    assert run_dir.parent.parent == tmp_path / "outputs" and (run_dir / "summary.json").is_file()
    write_pair(tmp_path / "in", tmp_path / "unused", "x", 50, 40, 2, seed=1)
    r = segcli("predict", str(tmp_path / "in" / "*.jpg"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(tmp_path / "predictions" / "x.png"), cv2.IMREAD_UNCHANGED).shape == (
        50,
        40,
    )


def test_max_minutes_stops_validates_and_saves(tmp_path: Path):
    r = segcli(
        "train",
        "trainer.max_minutes=0.0001",
        "trainer.epochs=50",
        "dataset.num_train=16",
        "dataset.num_val=4",
        "dataset.image_size=[64,64]",
        "dataset.crop_size=[64,64]",
        "hydra.run.dir=run",
        *FAST,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by"] == "max_minutes" and summary["epochs"] == 1
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert line["val_miou"] is not None
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_binary_0_255_masks_with_mask_values_and_random_split(
    flat_binary_root: Path, tmp_path: Path
):
    r = segcli(
        "train",
        "dataset=folder",
        f"dataset.root={flat_binary_root}",
        "dataset.num_classes=2",
        "dataset.mask_values={0:0,255:1}",
        "dataset.ignore_index=254",
        "trainer.epochs=1",
        "loss=balanced_ce",
        "loss.classes=[1]",
        "hydra.run.dir=run",
        *FAST,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["val"]) == 2 and len(split["train"]) == 8
    # the training split's class statistics, kept for the loss weights of a resumed run
    stats = json.loads((tmp_path / "run" / "class_pixels.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert stats["pixels"] == summary["class_pixel_counts"]["train"] and sum(stats["pixels"]) > 0
    n0, n1 = stats["pixels"]
    assert stats["class_weights"]["inverse_frequency"] == pytest.approx(
        [(n0 + n1) / (2 * n0), (n0 + n1) / (2 * n1)]
    )


def test_dataset_scale_keeps_scores_and_predictions_at_full_resolution(
    segnet_root: Path, tmp_path: Path
):
    r = segcli(
        "train",
        "dataset=camvid",
        f"dataset.root={segnet_root}",
        "dataset.num_classes=3",
        "dataset.class_names=null",
        "dataset.colors=null",
        "dataset.ignore_index=255",
        "dataset.scale=0.5",
        "trainer.epochs=1",
        "hydra.run.dir=run",
        *FAST,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    r = segcli("eval", "run/checkpoints/best.pt", "--json", "v.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "v.json").read_text())
    assert ev["miou"] == pytest.approx(summary["val"]["miou"], abs=1e-9)
    write_pair(tmp_path / "photos", tmp_path / "unused", "odd", 45, 67, 3, seed=5)
    r = segcli("predict", "photos", "-c", "run/checkpoints/best.pt", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(tmp_path / "out" / "odd.png"), cv2.IMREAD_UNCHANGED).shape == (45, 67)


def test_print_composed_config(tmp_path: Path):
    r = segcli("train", "--cfg", "job", "model=fpn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "arch: FPN" in r.stdout and not (tmp_path / "outputs").exists()


def test_help_lists_groups_and_options(tmp_path: Path):
    r = segcli("train", "--help", cwd=tmp_path)
    assert r.returncode == 0
    for word in ("dataset", "camvid", "deeplabv3plus", "dice_ce", "heavy", "onecycle"):
        assert word in r.stdout


@pytest.mark.parametrize(
    "case",
    [
        "missing_root",
        "empty_root",
        "no_mask",
        "no_image",
        "truncated_image",
        "mask_size",
        "mask_value",
        "rgb_mask",
        "unknown_key",
        "unknown_option",
        "bad_number",
        "nan_loss",
        "missing_checkpoint",
        "not_a_checkpoint",
        "empty_predict_folder",
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(case: str, segnet_root: Path, tmp_path: Path):
    train = [
        "train",
        "dataset=camvid",
        "dataset.num_classes=3",
        "dataset.class_names=null",
        "dataset.colors=null",
        "dataset.ignore_index=255",
        "trainer.epochs=1",
        *FAST,
    ]
    if case == "missing_root":
        r = segcli(*train, f"dataset.root={tmp_path / 'nope'}", cwd=tmp_path)
        assert_user_error(r, "nope: dataset.root not found")
    elif case == "no_mask":
        (segnet_root / "trainannot" / "train3.png").unlink()
        r = segcli(*train, f"dataset.root={segnet_root}", cwd=tmp_path)
        assert_user_error(r, "train3.jpg: image has no mask")
    elif case == "empty_root":
        (tmp_path / "empty" / "images").mkdir(parents=True)
        (tmp_path / "empty" / "masks").mkdir()
        r = segcli(*train, "dataset=folder", f"dataset.root={tmp_path / 'empty'}", cwd=tmp_path)
        assert_user_error(r, "images: no image files")
    elif case == "no_image":
        (segnet_root / "val" / "val2.jpg").unlink()
        r = segcli(*train, f"dataset.root={segnet_root}", cwd=tmp_path)
        assert_user_error(r, "val2.png: mask has no image")
    elif case == "truncated_image":
        path = segnet_root / "train" / "train5.jpg"
        path.write_bytes(path.read_bytes()[:300])
        r = segcli(*train, f"dataset.root={segnet_root}", cwd=tmp_path)
        assert_user_error(r, "train5.jpg: cannot read as an image")
    elif case == "rgb_mask":
        path = segnet_root / "trainannot" / "train1.png"
        colour = cv2.imread(
            str(path)
        )  # three channels, and not a gray image saved as RGB (that reads as gray)
        colour[..., 2] = 200
        cv2.imwrite(str(path), colour)
        r = segcli(*train, f"dataset.root={segnet_root}", cwd=tmp_path)
        assert_user_error(r, "train1.png: mask has 3 channels", "dataset.mask_format=rgb")
    elif case == "bad_number":
        assert_user_error(
            segcli("train", "trainer.batch_size=0", cwd=tmp_path),
            "trainer.batch_size=0: expected an integer >= 1",
        )
    elif case == "nan_loss":
        r = segcli(
            "train",
            "loss=ce",
            "dataset.class_weights=[nan,1,1,1]",
            "dataset.num_train=8",
            *FAST,
            cwd=tmp_path,
        )
        assert_user_error(r, "training diverged in epoch 1: loss is nan at step 1")
    elif case == "not_a_checkpoint":
        (tmp_path / "notes.pt").write_text("hello")
        assert_user_error(
            segcli("eval", "notes.pt", cwd=tmp_path), "notes.pt: cannot read as a checkpoint"
        )
    elif case == "mask_size":
        cv2.imwrite(
            str(segnet_root / "valannot" / "val1.png"),
            cv2.imread(str(segnet_root / "valannot" / "val1.png"))[:10, :, 0],
        )
        r = segcli(*train, f"dataset.root={segnet_root}", cwd=tmp_path)
        assert_user_error(
            r, "val1.png: mask is 80x10 (WxH); expected the size of its image val1.jpg, 80x48"
        )
    elif case == "mask_value":
        r = segcli(*train, f"dataset.root={segnet_root}", "dataset.num_classes=2", cwd=tmp_path)
        assert_user_error(r, "mask values [2] are not classes; expected one of [0, 1, 255]")
    elif case == "unknown_key":
        assert_user_error(segcli("train", "trainer.epochz=3", cwd=tmp_path), "trainer.epochz")
    elif case == "unknown_option":
        r = segcli("train", "loss=dicee", cwd=tmp_path)
        assert_user_error(r, "loss/dicee", "dice_ce")
        assert "search path" not in r.stderr
    elif case == "missing_checkpoint":
        assert_user_error(
            segcli("eval", "nothing.pt", cwd=tmp_path), "nothing.pt: checkpoint not found"
        )
    elif case == "empty_predict_folder":
        (tmp_path / "empty").mkdir()
        assert_user_error(
            segcli("predict", "empty", "-c", "x.pt", cwd=tmp_path), "empty: folder holds no images"
        )
    assert not list(tmp_path.glob("outputs/*/*")), "a failed start left a run directory"


@pytest.mark.camvid
def test_camvid_one_step_then_eval(tmp_path: Path):
    from helpers import camvid_or_skip

    root = camvid_or_skip()
    # dataset.scale=0.5: the model sees half-resolution frames (4x faster validation and eval);
    # masks and scores stay at 360x480
    r = segcli(
        "train",
        "dataset=camvid",
        f"dataset.root={root}",
        "trainer.max_minutes=0.0001",
        "trainer.num_workers=0",
        "trainer.batch_size=2",
        "dataset.crop_size=[64,64]",
        "dataset.scale=0.5",
        "trainer.samples=0",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by"] == "max_minutes"
    assert list(summary["val"]["per_class_iou"])[:3] == ["sky", "building", "pole"]
    assert sum(summary["class_pixel_counts"]["val"]) > 0
    r = segcli("eval", "run/checkpoints/best.pt", "--json", "v.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "v.json").read_text())
    assert ev["images"] == 101 and ev["miou"] == pytest.approx(summary["val"]["miou"], abs=1e-9)
    assert sum(summary["class_pixel_counts"]["val"]) == int(
        np.sum(summary["val"]["confusion_matrix"])
    )  # full size


def test_every_loss_option_trains_end_to_end_in_one_multirun(tmp_path: Path):
    names = options_for("loss", "semantic")  # every loss of conf/loss/ but task=instance's own
    assert len(names) == len(list((REPO / "conf" / "loss").glob("*.yaml"))) - 1
    r = segcli(
        "train",
        "-m",
        "loss=" + ",".join(names),
        "trainer.epochs=1",
        "dataset.num_train=8",
        "dataset.num_val=4",
        "dataset.image_size=[64,64]",
        "dataset.crop_size=[64,64]",
        "trainer.num_workers=0",
        "trainer.batch_size=4",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    seen = set()
    for job in (tmp_path / "sweep").iterdir():
        if not (job / "summary.json").exists():
            continue
        seen.add(
            next(
                x
                for x in (job / ".hydra" / "overrides.yaml").read_text().split()
                if x.startswith("loss=")
            )
        )
        record = json.loads((job / "metrics.jsonl").read_text().splitlines()[-1])
        assert all(np.isfinite(record[k]) for k in ("train_loss", "val_loss", "val_miou")), job
    assert seen == {f"loss={n}" for n in names}
