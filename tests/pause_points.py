"""Run segcli paused at a named point of training, so that a test kills or signals it exactly there.

Kill tests that sleep and hope land wherever the machine's speed puts them (issue 18). Instead a
test starts ``python -m pause_points ARGS...`` (the ``segcli`` command with two hooks) with
``SEGCLI_PAUSE`` set to one point:

- ``checkpoint:EPOCH:STEP``: right after ``checkpoints/last.pt`` was written in epoch EPOCH after
  optimizer step STEP (counted over the run);
- ``epoch_line:EPOCH``: right after epoch EPOCH's line was appended to metrics.jsonl.

At the point the process writes ``SEGCLI_PAUSE_DIR/paused`` (JSON: the point and the pid) and waits
until ``SEGCLI_PAUSE_DIR/release`` exists (at most ``TIMEOUT`` seconds), so the test can SIGKILL it
there, or send SIGINT/SIGTERM, wait for ``SEGCLI_PAUSE_DIR/signalled`` (written once segcli's
handler has recorded the signal) and release it. Only the writes of the run folder and the signal
handler are wrapped; the training itself runs unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TIMEOUT = 300.0


def _pause(point: str) -> None:
    folder = Path(os.environ["SEGCLI_PAUSE_DIR"])
    (folder / "paused.tmp").write_text(json.dumps({"point": point, "pid": os.getpid()}))
    (folder / "paused.tmp").replace(folder / "paused")
    end = time.monotonic() + TIMEOUT
    while not (folder / "release").exists() and time.monotonic() < end:
        time.sleep(0.01)


def install(point: str) -> None:
    """Wrap ``RunDir.save_checkpoint`` and ``RunDir.log_epoch`` to pause at ``point``, and
    ``StopSignals._handle`` to report a handled signal (see above)."""
    from segcli.runs.run_dir import RunDir
    from segcli.training.interrupts import StopSignals

    kind, *numbers = point.split(":")
    wanted = [int(n) for n in numbers]
    save, log = RunDir.save_checkpoint, RunDir.log_epoch

    def save_checkpoint(self, path, checkpoint):
        save(self, path, checkpoint)
        progress = checkpoint.get("progress") or {}
        if (
            kind == "checkpoint"
            and Path(path).name == "last.pt"
            and [progress.get("epoch"), checkpoint["step"]] == wanted
        ):
            _pause(point)

    def log_epoch(self, record):
        log(self, record)
        if kind == "epoch_line" and [record["epoch"]] == wanted:
            _pause(point)

    handle = StopSignals._handle

    def handle_signal(self, signum, frame):
        handle(self, signum, frame)
        (Path(os.environ["SEGCLI_PAUSE_DIR"]) / "signalled").write_text(str(signum))

    RunDir.save_checkpoint, RunDir.log_epoch, StopSignals._handle = (
        save_checkpoint,
        log_epoch,
        handle_signal,
    )


if __name__ == "__main__":
    import sys

    from segcli.cli.app import main

    install(os.environ["SEGCLI_PAUSE"])
    sys.argv[0] = "segcli"
    main()
