"""Light commands stay light: ``segcli predict`` (and eval's checkpoint loading) import nothing of the
trainer, the loggers or plotting."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("segcli.trainer", "segcli.jobs", "segcli.loggers", "segcli.plot", "segcli.sweeps", "segcli.bench",
         "matplotlib", "tensorboard", "mlflow")


def loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_predict_and_eval_import_neither_the_trainer_nor_loggers_nor_plotting():
    modules = loaded_after("import segcli.predict, segcli.evaluation")
    assert {"segcli.predict", "segcli.evaluation", "segcli.checkpoints"} <= modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
