"""reports: runs looked at together. ``runs_table`` (``segcli runs``: the runs table, seed groups),
``plot`` (``segcli plot``) and ``html`` (``segcli report``: one offline HTML page).

May import: the top level, data, models, metrics, runs, inference. Never imports: training, cli
(import contracts in pyproject.toml).
"""
