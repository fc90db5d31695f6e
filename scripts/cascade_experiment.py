"""The cascade experiment of docs/channels.md: a synthetic "container and contents" set
(tests/helpers.py's ``write_containers``: disks of the contents' colour lie outside the containers
too, as background), trained as one stage for E and for 2E epochs, and as two stages (stage 1 E
epochs, then stage 2 E epochs on stage 1's probabilities, or inside stage 1's container region);
prints the val IoU of each class and the seconds of each run. Same model, seed and schedule.

    python scripts/cascade_experiment.py --epochs 20 --train 64 --val 16 --size 96
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
from helpers import CONTAINERS, write_containers  # the tests' generator


def train(root: Path, run: Path, extra: list[str], epochs: int, size: int) -> tuple[dict, float]:
    cmd = [
        sys.executable, "-m", "segcli", "train", *CONTAINERS, f"dataset.root={root}", *extra,
        "model=unet", "model.encoder_name=resnet18", f"trainer.epochs={epochs}",
        "trainer.batch_size=8", "trainer.num_workers=0", f"dataset.crop_size=[{size},{size}]",
        "seed=1", f"hydra.run.dir={run}",
    ]  # fmt: skip
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"training failed: {r.stderr[-3000:]}")
    return json.loads((run / "summary.json").read_text()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--keep", type=Path, help="Folder for the data and runs (default: temp)")
    a = parser.parse_args()
    folder = a.keep or Path(tempfile.mkdtemp(prefix="cascade-"))
    root, e = folder / "data", a.epochs
    write_containers(root, {"train": a.train, "val": a.val}, size=a.size)
    stage1 = folder / "single" / "checkpoints" / "best.pt"
    plans = [
        ("one stage", "single", [], e, 0),
        ("one stage, 2E epochs", "single2", [], 2 * e, 0),
        ("cascade: stage 1's probabilities", "probs", [f"model.cascade.from={stage1}"], e, e),
        (
            "cascade: inside stage 1's container region",
            "roi",
            [f"model.cascade.from={stage1}", "model.cascade.roi_class=[1,2]"],
            e,
            e,
        ),
    ]
    print(f"{a.train} training / {a.val} val images of {a.size}x{a.size}, E = {e} epochs, Unet")
    print("| model | epochs | background IoU | container IoU | contents IoU | mIoU | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, name, extra, epochs, before in plans:
        summary, seconds = train(root, folder / name, extra, epochs, a.size)
        iou = summary["val"]["per_class_iou"]
        cells = " | ".join(f"{iou[c]:.3f}" for c in ("background", "container", "contents"))
        spent = f"{before} + {epochs}" if before else f"{epochs}"
        print(f"| {label} | {spent} | {cells} | {summary['val']['miou']:.3f} | {seconds:.0f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
