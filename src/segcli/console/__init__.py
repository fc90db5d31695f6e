"""console: everything segcli prints, shared by every layer like the other top-level modules
(``from segcli import console``; ``console.out``, ``console.error``, ``console.scores_table``).
``terminal`` (the rich consoles, progress bars, epoch lines, one-line errors and warnings,
``print_wide``) and ``tables`` (the commands' rich tables). The names below are its interface;
callers use them from here, not from the modules.

May import: the top level only. Never imports a subpackage (import contracts in pyproject.toml).
"""

from segcli.console.tables import (
    bench_table,
    bootstrap_table,
    data_tables,
    models_table,
    parity_table,
    protocols_table,
    ranking_table,
    runs_table,
    scores_table,
    seed_groups_table,
)
from segcli.console.terminal import (
    EpochProgress,
    debugging,
    epoch_line,
    err,
    error,
    error_line,
    fmt,
    interactive,
    out,
    print_wide,
    warning,
)

__all__ = [
    "EpochProgress",
    "bench_table",
    "bootstrap_table",
    "data_tables",
    "debugging",
    "epoch_line",
    "err",
    "error",
    "error_line",
    "fmt",
    "interactive",
    "models_table",
    "out",
    "parity_table",
    "print_wide",
    "protocols_table",
    "ranking_table",
    "runs_table",
    "scores_table",
    "seed_groups_table",
    "warning",
]
