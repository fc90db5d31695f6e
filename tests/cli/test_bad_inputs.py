"""Bad input that needs a trained checkpoint or a whole command: another architecture or class
count, a non-image to predict, skipping bad files, `segcli data check`, running out of memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import FAST, assert_user_error, segcli, write_pair

SEGNET = [
    "dataset=camvid",
    "dataset.num_classes=3",
    "dataset.class_names=null",
    "dataset.colors=null",
    "dataset.ignore_index=255",
]


@pytest.fixture(scope="module")
def checkpoint(module_tmp) -> Path:
    cwd = module_tmp("run")
    r = segcli(
        "train",
        "trainer.epochs=1",
        "dataset.num_train=8",
        "dataset.num_val=2",
        "dataset.image_size=[64,64]",
        "dataset.crop_size=[64,64]",
        "hydra.run.dir=run",
        *FAST,
        cwd=cwd,
    )
    assert r.returncode == 0, r.stderr
    return cwd / "run" / "checkpoints" / "best.pt"


def test_checkpoint_of_another_architecture_or_class_count(checkpoint: Path, tmp_path: Path):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["model"]["arch"] = "FPN"
    torch.save(ckpt, tmp_path / "fpn.pt")
    write_pair(tmp_path / "photos", tmp_path / "unused", "x", 32, 32, 2, seed=0)
    assert_user_error(
        segcli("predict", "photos", "-c", "fpn.pt", cwd=tmp_path),
        "checkpoint weights do not fit FPN-resnet18",
    )
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["classes"]["num_classes"] = 7
    torch.save(ckpt, tmp_path / "seven.pt")
    assert_user_error(
        segcli("eval", "seven.pt", cwd=tmp_path),
        "checkpoint weights do not fit Unet-resnet18",
        "size mismatch",
    )
    r = segcli(
        "train",
        *FAST,
        "model.encoder_name=mobilenet_v2",
        f"model.encoder_weights={checkpoint}",
        cwd=tmp_path,
    )
    assert_user_error(r, "no tensor matches encoder mobilenet_v2")


def test_predict_on_a_non_image(checkpoint: Path, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_user_error(
        segcli("predict", "notes.txt", "-c", str(checkpoint), cwd=tmp_path),
        "notes.txt: cannot read as an image",
    )


def test_on_bad_file_skip_trains_without_the_bad_pairs(segnet_root: Path, tmp_path: Path):
    (segnet_root / "train" / "train2.jpg").write_bytes(b"broken")
    (segnet_root / "trainannot" / "train4.png").unlink()
    r = segcli(
        "train",
        *SEGNET,
        f"dataset.root={segnet_root}",
        "dataset.on_bad_file=skip",
        "trainer.epochs=1",
        "hydra.run.dir=run",
        *FAST,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (
        "left out 1 bad pair(s) of the train split; the first:" in r.stderr
        and "train2.jpg" in r.stderr
    )
    assert "left out 1 file(s) without a partner" in r.stderr and "train4.jpg" in r.stderr
    assert "on 6 train / 3 val images" in r.stdout
    assert (tmp_path / "run" / "summary.json").is_file()


def test_data_check_lists_every_problem(segnet_root: Path, tmp_path: Path):
    r = segcli(
        "data",
        "check",
        *SEGNET,
        f"dataset.root={segnet_root}",
        "--json",
        "check.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "check.json").read_text())
    assert {s: v["images"] for s, v in result["splits"].items()} == {
        "train": 8,
        "val": 3,
        "test": 2,
    }
    assert result["splits"]["train"]["sizes"] == {"48x80": 8} and result["problems"] == []
    assert result["splits"]["val"]["class_pixels"] == [3 * 16 * 80] * 3
    assert "no problems found" in r.stdout and "labelled pixels per class" in r.stdout

    (segnet_root / "train" / "train2.jpg").write_bytes(b"broken")
    (segnet_root / "valannot" / "val0.png").unlink()
    write_pair(
        segnet_root / "test", segnet_root / "testannot", "test0", 48, 80, 5, seed=0
    )  # class values 3, 4
    r = segcli("data", "check", *SEGNET, f"dataset.root={segnet_root}", cwd=tmp_path)
    assert r.returncode == 1
    problems = r.stderr.strip().splitlines()
    assert len(problems) == 3 and all(p.startswith("segcli: error: ") for p in problems)
    assert any("train2.jpg: cannot read as an image" in p for p in problems)
    assert any("val0.jpg: image has no mask" in p for p in problems)
    assert any("test0.png: mask values [3, 4] are not classes" in p for p in problems)
    assert "3 problem(s) found" in r.stdout


def test_out_of_memory_is_a_one_line_hint(monkeypatch, tmp_path: Path):
    from segcli.config import compose_config, to_plain
    from segcli.errors import SegcliError
    from segcli.training import trainer

    class Exhausted(torch.nn.Module):
        def forward(self, logits, target):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "build_loss", lambda *a, **k: Exhausted())
    cfg = to_plain(
        compose_config(
            [
                "trainer.epochs=1",
                "dataset.num_train=8",
                "dataset.num_val=2",
                "dataset.image_size=[64,64]",
                "dataset.crop_size=[64,64]",
                *FAST,
            ]
        )
    )
    with pytest.raises(
        SegcliError,
        match=r"out of memory during training epoch 1 \(trainer.batch_size=4.*"
        r"try a smaller batch_size or crop_size",
    ):
        trainer.Trainer(cfg, tmp_path / "run").fit()


class Payload:
    """Stands for code hidden in a pickle: weights_only=True refuses to build it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_carrying_code_is_refused(tmp_path: Path):
    torch.save({"format": 1, "model": {}, "config": {}, "hook": Payload()}, tmp_path / "evil.pt")
    r = segcli("eval", "evil.pt", cwd=tmp_path)
    assert_user_error(r, "evil.pt: cannot read as a checkpoint (UnpicklingError)")
    assert "this must never run" not in r.stdout + r.stderr
