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
