"""Ctrl-C (SIGINT) and SIGTERM during training: stop at the next step, save, exit 130 / 143; and
``failure_recorded``, the summary.json of a run that stopped on an error.

Python turns SIGINT into a KeyboardInterrupt wherever the program happens to be, which could be
in the middle of an optimizer step. Training instead asks ``StopSignals.requested`` after
every step and every validation batch, then saves ``last.pt`` and exits with 128 + the signal
number, the shell's convention. A second Ctrl-C stops at once (the last saved ``last.pt`` stays
valid: checkpoints are written atomically). Loader workers ignore both signals
(data.loaders.worker_init).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from segcli import console
from segcli.errors import SegcliError
from segcli.runs.run_dir import RunDir

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopSignals:
    """Context manager that records SIGINT/SIGTERM instead of dying on them.

    A no-op outside the main thread, where Python cannot install signal handlers.

    Attributes:
        signum: the first signal received, or None.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        """True once SIGINT or SIGTERM has arrived."""
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM (128 + signal number)."""
        return EXIT_CODES.get(self.signum, 128 + int(self.signum or 0))

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = signum
        console.out.print(
            f"\nsegcli: {signal.Signals(signum).name} received; stopping after the current "
            "step and saving checkpoints/last.pt (Ctrl-C again to stop at once)",
            highlight=False,
        )

    def __enter__(self) -> StopSignals:  # noqa: PYI034 - Self needs Python 3.11
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@contextmanager
def failure_recorded(run: RunDir):
    """On a SegcliError after the first checkpoint, write summary.json with status "failed" and
    the message (a run that failed before it is removed by the CLI)."""
    try:
        yield
    except SegcliError as exc:
        if run.last.exists():
            run.write_summary({"status": "failed", "error": str(exc)})
        raise
