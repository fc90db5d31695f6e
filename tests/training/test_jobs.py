from pathlib import Path

from segcli.config import compose_config, to_plain
from segcli.data.datasets import build_datasets


def test_eval_on_the_train_split_is_not_augmented(segnet_root: Path):
    cfg = to_plain(
        compose_config(
            [
                "dataset=camvid",
                f"dataset.root={segnet_root}",
                "dataset.num_classes=3",
                "dataset.class_names=null",
                "dataset.colors=null",
                "dataset.crop_size=[32,32]",
            ]
        )
    )
    _, train_aug, _ = build_datasets(cfg, ("train",), 0)
    _, train_plain, _ = build_datasets(cfg, ("train",), 0, augmented=())
    assert tuple(train_aug["train"][0]["image"].shape) == (3, 32, 32)  # random crop
    assert tuple(train_plain["train"][0]["image"].shape) == (3, 64, 96)  # whole 48x80 image, padded


def test_existing_run_says_what_the_folder_holds(tmp_path: Path):
    import pytest

    from segcli.errors import SegcliError
    from segcli.runs.checkpoints import CHECKPOINT_FORMAT
    from segcli.runs.run_dir import RunDir
    from segcli.training.jobs import FolderState, existing_run

    cfg = to_plain(compose_config([]))
    run = RunDir(tmp_path / "run")
    assert existing_run(run.path, cfg) is FolderState.NEW
    run.save_checkpoint(run.last, {"format": CHECKPOINT_FORMAT, "config": cfg, "model": {}})
    assert existing_run(run.path, cfg) is FolderState.UNFINISHED
    run.write_summary({"status": "done"})
    changed = {**cfg, "trainer": {**cfg["trainer"], "num_workers": 7}}  # a machine setting
    assert existing_run(run.path, changed) is FolderState.DONE
    with pytest.raises(SegcliError, match=r"holds a run of another config \(trainer.epochs: "):
        existing_run(run.path, {**cfg, "trainer": {**cfg["trainer"], "epochs": 99}})
