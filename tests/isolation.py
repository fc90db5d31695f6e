"""Run a test's body in a spawned child process, so that a native crash (a heap corruption's abort,
a segfault in a kernel) fails that one test with its name instead of ending pytest and the whole
suite's result.

``run_isolated(fn, *args, label=...)`` returns what ``fn(*args)`` returns (it must pickle); an
exception in the child fails the test with the child's traceback; a child killed by a signal fails
it with the signal's name. ``fn`` must be importable by name (a module-level function of a test
module or helper): the child is spawned, not forked (torch's thread pools do not survive a fork).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
import traceback

import pytest


def _child(conn, fn, args) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_isolated(fn, *args, label: str, timeout: float = 900.0):
    """``fn(*args)`` in a spawned process; its return value.

    Raises:
        pytest.fail.Exception: the child raised (its traceback), died of a signal or exited without
            an answer (``label`` and the signal or exit code), or ran past ``timeout`` seconds.
    """
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, fn, args), name=f"isolated-{label}")
    process.start()
    sender.close()
    deadline, message = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if receiver.poll(0.5):
            try:
                message = receiver.recv()
            except EOFError:  # the child died before it answered
                pass
            break
        # a dead child normally shows as EOF above; this covers a forked grandchild still holding
        # the pipe
        if not process.is_alive() and not receiver.poll(0):
            break
    else:
        process.kill()
        process.join()
        pytest.fail(
            f"{label}: still running after {timeout:.0f} s in its child process (killed)",
            pytrace=False,
        )
    process.join(30)
    if message is None:
        code = process.exitcode
        how = (
            f"signal {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        pytest.fail(
            f"{label}: the child process died of a native crash ({how}) before it answered",
            pytrace=False,
        )
    status, payload = message
    if status == "error":
        pytest.fail(f"{label}: failed in its child process: {payload}", pytrace=False)
    return payload
