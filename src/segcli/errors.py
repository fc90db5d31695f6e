"""User-facing errors: one line naming the file or key and what was expected.

The CLI turns a ``SegcliError`` into that line on stderr and exit code 2, without a
traceback (``--debug`` or ``HYDRA_FULL_ERROR=1`` shows it).
"""


class SegcliError(Exception):
    """A problem with the user's input (data, config, checkpoint), not a bug in segcli.

    The message is one line that names the file or config key and says what was expected.
    """
