"""Weak-label training end to end, as a user runs it: simulated boxes, points and scribbles on the
synthetic shapes and label files on a folder dataset; the training masks a run writes are checked
against the fills of weak/fill.py on the same labels, their scores against a count by hand, the
rounds' folders and their resume, and the one-line errors (with no run folder left behind)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import TINY, assert_user_error, segcli, write_pair

from segcli.data.images import RawMask
from segcli.data.masks import encode_training_mask, training_mask_decoder
from segcli.data.synthetic import SyntheticDataset
from segcli.weak.fill import fill_boxes
from segcli.weak.simulate import boxes_from_mask

WEAK = [*TINY, "dataset.num_test=0"]


def masks_of(run: Path, r: int = 1) -> dict[str, np.ndarray]:
    """The training masks of round ``r`` as class indices (255: unlabelled)."""
    folder = run / "weak" / f"round{r}" / "masks"
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def box_run(module_tmp) -> Path:
    root = module_tmp("weak")
    run = root / "outputs" / "boxes"
    r = segcli(
        "train", *WEAK, "dataset.simulate=boxes", "weak.fill=box", f"hydra.run.dir={run}", cwd=root
    )
    assert r.returncode == 0, r.stderr
    return run


def test_simulated_boxes_train_on_their_filling_and_score_it_against_the_truth(box_run: Path):
    masks = masks_of(box_run)
    truth = SyntheticDataset(8, (64, 64), "train", None)
    assert sorted(masks) == [truth.name(i) for i in range(8)]
    matrix = np.zeros((4, 4), np.int64)
    for i in range(8):
        _, mask, name = truth.load(i)
        labels = boxes_from_mask(mask, 4, 255, 0, min_area=16)
        expected = fill_boxes(labels.boxes, labels.box_classes, mask.shape, 0, 255)
        np.testing.assert_array_equal(masks[name], encode_training_mask(expected, 4))
        matrix += np.bincount(mask.ravel() * 4 + expected.ravel(), minlength=16).reshape(4, 4)
    iou = np.diag(matrix) / (matrix.sum(0) + matrix.sum(1) - np.diag(matrix))
    scores = json.loads((box_run / "weak" / "round1" / "pseudo.json").read_text())
    assert scores["miou_vs_truth"] == pytest.approx(iou.mean())
    assert 0.3 < scores["miou_vs_truth"] < 1  # boxes are coarser than the shapes
    assert scores["labelled_share"] == 1.0  # Box fills every pixel (background outside the boxes)
    # the loss's class statistics are the training masks', not the true masks'
    counts = json.loads((box_run / "class_pixels.json").read_text())["pixels"]
    assert (
        counts
        == np.bincount(np.concatenate([m.ravel() for m in masks.values()]), minlength=4)[
            :4
        ].tolist()
    )
    summary = json.loads((box_run / "summary.json").read_text())
    assert summary["status"] == "done"


def test_simulated_points_keep_the_seeded_points_of_each_class(tmp_path: Path):
    run = tmp_path / "run"
    args = [*WEAK, "dataset.simulate=points", "weak.points_per_class=3", f"hydra.run.dir={run}"]
    assert segcli("train", *args, cwd=tmp_path).returncode == 0
    truth = SyntheticDataset(8, (64, 64), "train", None)
    for name, mask in masks_of(run).items():
        truth_mask = truth.load(int(name.split("_")[1]))[1]
        labelled = mask != 255
        np.testing.assert_array_equal(mask[labelled], truth_mask[labelled])  # points keep truth
        present = np.unique(truth_mask)
        assert sorted(np.unique(mask[labelled]).tolist()) == present.tolist()
        assert all((mask == c).sum() == min(3, (truth_mask == c).sum()) for c in present)
    key = (0, zlib.crc32(b"train_00000"))  # fixed per image: the same draw as keep_points'
    from segcli.data.masks import keep_points

    first = keep_points(truth.load(0)[1], 3, key, 4, 255)
    np.testing.assert_array_equal(masks_of(run)["train_00000"], np.where(first == 255, 255, first))


def test_two_rounds_keep_each_round_and_a_rerun_continues_without_redoing_them(tmp_path: Path):
    run = tmp_path / "run"
    args = [*WEAK, "dataset.simulate=boxes", "weak.rounds=2", f"hydra.run.dir={run}"]
    assert segcli("train", *args, cwd=tmp_path).returncode == 0
    first, second = run / "weak" / "round1", run / "weak" / "round2"
    assert json.loads((first / "summary.json").read_text())["status"] == "done"
    assert (first / "checkpoints" / "best.pt").is_file() and (run / "checkpoints/best.pt").is_file()
    assert json.loads((second / "pseudo.json").read_text())["images"] == 8
    # round 2's masks are round 1's model's prediction inside the boxes: other pixels than round 1's
    one, two = masks_of(run, 1), masks_of(run, 2)
    assert sorted(one) == sorted(two) and any((one[n] != two[n]).any() for n in one)
    # killed before round 2's first checkpoint: the same command redoes only round 2's training
    before = (first / "metrics.jsonl").read_text(), {n: m.copy() for n, m in two.items()}
    for name in ("checkpoints/best.pt", "checkpoints/last.pt", "summary.json", "metrics.jsonl"):
        (run / name).unlink()
    other = segcli("train", *args, "weak.min_share=0.3", cwd=tmp_path)  # round 1 is another run
    assert_user_error(other, "holds a run of another config", "weak.min_share: 0.1 -> 0.3")
    again = segcli("train", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "unfinished run of this config; resuming it" in again.stdout
    assert (first / "metrics.jsonl").read_text() == before[0]
    assert all((masks_of(run, 2)[n] == m).all() for n, m in before[1].items())
    assert json.loads((run / "summary.json").read_text())["status"] == "done"


def folder_root(tmp_path: Path) -> Path:
    """``dataset=folder``: images/{train,val}, masks/val only (the training split has boxes)."""
    root = tmp_path / "data"
    for i in range(4):
        write_pair(root / "images" / "val", root / "masks" / "val", f"v{i}", 40, 48, 3, seed=i)
    for i in range(6):
        write_pair(root / "images" / "train", tmp_path / "unused", f"t{i}", 40, 48, 3, seed=10 + i)
    return root


def coco_boxes(names: list[str]) -> dict:
    return {
        "images": [
            {"id": k + 1, "file_name": f"{n}.png", "width": 48, "height": 40}
            for k, n in enumerate(names)
        ],
        "annotations": [
            {"id": k + 1, "image_id": k + 1, "category_id": 7, "bbox": [4, 6, 20, 10]}
            for k in range(len(names))
        ],
        "categories": [{"id": 7, "name": "b"}],
    }


FOLDER = [
    *TINY[:2],
    "dataset=folder",
    "dataset.num_classes=3",
    "dataset.class_names=[a,b,c]",
    "dataset.crop_size=[32,32]",
    "dataset.labels=boxes",
    "dataset.weak_labels=boxes.json",
    "weak.fill=box",
]


def test_box_files_train_the_images_they_name_and_never_a_validation_image(tmp_path: Path):
    root = folder_root(tmp_path)
    # the file also names a validation image: it must not become a training image
    (root / "boxes.json").write_text(json.dumps(coco_boxes([f"t{i}" for i in range(5)] + ["v0"])))
    run = tmp_path / "run"
    r = segcli("train", *FOLDER, f"dataset.root={root}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    masks = masks_of(run)
    assert sorted(masks) == [f"t{i}" for i in range(5)]  # t5 has no labels, v0 is validation
    expected = np.zeros((40, 48), np.uint8)
    expected[6:16, 4:24] = 1  # bbox [x=4, y=6, w=20, h=10] of class b, background 0 outside
    for mask in masks.values():
        np.testing.assert_array_equal(mask, expected)
    assert "1 training image(s) have no weak labels" in r.stdout + r.stderr
    assert json.loads((run / "weak/round1/pseudo.json").read_text())["images"] == 5


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["dataset.weak_labels=missing.json"], ["missing.json", "dataset.weak_labels not found"]),
        (["dataset.labels=tags"], ["dataset.labels=tags", "not supported"]),
        (["weak.rounds=2", "dataset.labels=points"], ["weak.rounds=2", "boxes"]),
        (["weak.fill=snake"], ["weak.fill=snake", "box_i"]),
    ],
)
def test_bad_weak_settings_are_one_line_and_leave_no_run_folder(tmp_path, extra, fragments):
    root = folder_root(tmp_path)
    (root / "boxes.json").write_text(json.dumps(coco_boxes(["t0"])))
    run = tmp_path / "run"
    r = segcli(
        "train", *FOLDER, f"dataset.root={root}", *extra, f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert_user_error(r, *fragments)
    assert not run.exists()


def test_training_masks_round_trip_and_unlabelled_pixels_read_as_ignore_index():
    mask = np.array([[0, 2, 11], [1, 11, 2]])
    encoded = encode_training_mask(mask, 3)
    assert encoded.dtype == np.uint8 and encoded.tolist() == [[0, 2, 255], [1, 255, 2]]
    decoder = training_mask_decoder(3, 11)
    raw = RawMask(encoded, "8-bit", "PNG", None)
    np.testing.assert_array_equal(decoder.decode(raw, "m.png"), mask)
