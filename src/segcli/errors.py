"""User-facing errors: one line naming the file or key and what was expected.

The CLI turns a ``SegcliError`` into that line on stderr and exit code 2, without a
traceback (``--debug`` or ``HYDRA_FULL_ERROR=1`` shows it).
"""


class SegcliError(Exception):
    """A problem with the user's input (data, config, checkpoint), not a bug in segcli.

    The message is one line that names the file or config key and says what was expected.
    """


class RunInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving ``last.pt``; the CLI exits with ``exit_code``
    (130 or 143) and prints the message, which says how to resume."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
