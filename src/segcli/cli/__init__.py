"""cli: the ``segcli`` command (Typer). ``app`` holds the commands, each a thin call into the
package that owns the work.

May import: everything. Nothing imports it (import contracts in pyproject.toml).
"""


def main() -> None:
    """The ``segcli`` console script (``segcli.cli:main`` in pyproject.toml): ``cli.app.main``."""
    from segcli.cli.app import main as run

    run()
