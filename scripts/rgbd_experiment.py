"""The RGB-D experiment of docs/channels.md: a synthetic set where class 2 (a disk) is visible only
in the depth channel (tests/helpers.py's ``write_rgbd``), trained once on RGB alone and once on
RGB + depth (``dataset.extra_inputs``), the same model, seed and schedule; prints the val IoU of
each class for both and the seconds each run took.

    python scripts/rgbd_experiment.py --epochs 30 --train 64 --val 16 --size 96
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import EXTRA_DEPTH, RGBD, write_rgbd  # the tests' generator


def train(root: Path, run: Path, extra: list[str], epochs: int, size: int) -> tuple[dict, float]:
    cmd = [
        sys.executable, "-m", "segcli", "train", *RGBD, f"dataset.root={root}", *extra,
        "model=unet", "model.encoder_name=resnet18", f"trainer.epochs={epochs}",
        "trainer.batch_size=8", "trainer.num_workers=0", f"dataset.crop_size=[{size},{size}]",
        "seed=1", f"hydra.run.dir={run}",
    ]  # fmt: skip
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"training failed: {r.stderr[-3000:]}")
    summary = json.loads((run / "summary.json").read_text())
    return summary, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--keep", type=Path, help="Folder for the data and runs (default: temp)")
    a = parser.parse_args()
    folder = a.keep or Path(tempfile.mkdtemp(prefix="rgbd-"))
    root = folder / "data"
    write_rgbd(root, {"train": a.train, "val": a.val}, size=a.size)
    rows = []
    for name, extra in (("RGB", ["dataset.channels=stored"]), ("RGB-D", [EXTRA_DEPTH])):
        summary, seconds = train(root, folder / name, extra, a.epochs, a.size)
        per_class = summary["val"]["per_class_iou"]
        rows.append((name, per_class, summary["val"]["miou"], seconds))
    print(f"{a.train} training / {a.val} val images of {a.size}x{a.size}, {a.epochs} epochs, Unet")
    print("| input | background IoU | square IoU (RGB) | disk IoU (depth only) | mIoU | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, per_class, miou, seconds in rows:
        ious = [per_class[c] for c in ("background", "square", "disk")]
        print(
            f"| {name} | "
            + " | ".join(f"{v:.3f}" for v in ious)
            + f" | {miou:.3f} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
