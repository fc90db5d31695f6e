"""The architecture holds: the import contracts of pyproject.toml (import-linter), only the shared
modules at the top of the package, and light commands stay light (``segcli predict`` and eval's
checkpoint loading import nothing of training, the loggers or plotting)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO

HEAVY = ("segcli.reports.plot", "matplotlib", "tensorboard", "mlflow")
TOP_LEVEL = {
    "__init__",
    "__main__",
    "errors",
    "config",
    "registry",
    "runtime",
    "files",
    "preprocessing",
    "tasks",
}
TOP_LEVEL_PACKAGES = {"console"}  # shared like the modules above; its modules: terminal, tables
SUBPACKAGES = {
    "data",
    "models",
    "losses",
    "metrics",
    "runs",
    "inference",
    "weak",
    "training",
    "reports",
    "cli",
}


def loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_predict_and_eval_import_neither_the_trainer_nor_loggers_nor_plotting():
    modules = loaded_after("import segcli.inference.predict, segcli.inference.evaluation")
    assert {
        "segcli.inference.predict",
        "segcli.inference.evaluation",
        "segcli.runs.checkpoints",
    } <= modules
    heavy = {m for m in modules if m in HEAVY or m.startswith("segcli.training")}
    assert not heavy, sorted(heavy)


def test_the_import_contracts_of_pyproject_hold():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "5 kept, 0 broken" in r.stdout


def test_only_the_shared_modules_sit_at_the_top_and_every_subpackage_says_what_it_may_import():
    package = REPO / "src" / "segcli"
    assert {p.stem for p in package.glob("*.py")} == TOP_LEVEL
    assert {
        p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"
    } == SUBPACKAGES | TOP_LEVEL_PACKAGES
    for name in SUBPACKAGES | TOP_LEVEL_PACKAGES:
        doc = (package / name / "__init__.py").read_text()
        assert "May import:" in doc, name


def test_help_and_the_commands_that_run_no_model_load_no_torch():
    # segcli --help, every command's --help, shell completion and segcli runs answer in a fraction
    # of a second because torch (about 2 s to import) loads only where a model runs
    modules = loaded_after("import segcli.cli.app")
    assert "torch" not in modules and "segcli.training.distributed" not in modules
    modules = loaded_after(
        "from typer.testing import CliRunner\nfrom segcli.cli.app import app\n"
        "assert CliRunner().invoke(app, ['runs', '.']).exit_code == 0"
    )
    assert "torch" not in modules and "segcli.reports.runs_table" in modules
