"""runs: what a run leaves on disk. ``run_dir`` (``RunDir``: the run folder, metrics.jsonl,
summary.json, stored evals, status) and ``checkpoints`` (the checkpoint file: load, find the
newest).

May import: the top level only. Never imports: data, models, losses, metrics, training, inference,
reports, cli (import contracts in pyproject.toml).
"""
