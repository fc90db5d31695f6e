"""Shared fixtures: tiny image/mask folders written per test and the session's evaluated runs.
The plain helpers (tiny configs, ``segcli`` in a subprocess, ``write_pair``) are in helpers.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import FAST, segcli, segnet_overrides, write_pair

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Under pytest-xdist (pyproject's addopts: two workers on CI's two cores) each worker and the segcli
# processes it starts compute on one thread: two workers of two threads each oversubscribe the
# cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# pair-check caches (data/pair_cache.py) of the tests' throw-away trees: not in the user's ~/.cache
os.environ.setdefault("SEGCLI_CACHE_DIR", tempfile.mkdtemp(prefix="segcli-test-cache-"))

# pytester: the isolation test runs a small suite of its own (tests/models/test_amx_guard.py)
pytest_plugins = ["pytester"]


@pytest.fixture
def segnet_root(tmp_path: Path) -> Path:
    """CamVid's layout: train/ trainannot/ val/ valannot/ test/ testannot/, 3 classes, 48x80."""
    root = tmp_path / "segnet"
    for split, n in (("train", 8), ("val", 3), ("test", 2)):
        for i in range(n):
            write_pair(root / split, root / f"{split}annot", f"{split}{i}", 48, 80, 3, seed=i)
    return root


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Callable[[str], Path]]:
    """``tmp_path_factory.mktemp`` for module fixtures, whose folders are removed once the module's
    tests are done (kept when a test of the session has failed). With pyproject's
    tmp_path_retention_policy = "failed" for ``tmp_path``, the suite holds the runs of the tests in
    progress instead of all of them (tens of GB: a run's checkpoints are 230 MB)."""
    made: list[Path] = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if not request.session.testsfailed:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def evaluated_runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs on a segnet tree (CamVid's layout, 3 classes; runs of 1 and 3 epochs, 2 sample
    images each), each evaluated on the test split with ``--worst 2``: ``{"short", "longer",
    "root"}``. Shared by several tests: copy a run before changing it."""
    base = tmp_path_factory.mktemp("evaluated")
    root = base / "segnet"
    for split, n in (("train", 8), ("val", 3), ("test", 2)):
        for i in range(n):
            write_pair(root / split, root / f"{split}annot", f"{split}{i}", 48, 80, 3, seed=i)
    out = {"root": root}
    for name, epochs in (("short", 1), ("longer", 3)):
        run = out[name] = base / name
        r = segcli(
            "train",
            *segnet_overrides(root),
            *FAST,
            f"trainer.epochs={epochs}",
            "trainer.samples=2",
            f"hydra.run.dir={run}",
            cwd=base,
        )
        assert r.returncode == 0, r.stderr
        r = segcli(
            "eval",
            str(run / "checkpoints" / "best.pt"),
            "--split",
            "test",
            "--worst",
            "2",
            cwd=base,
        )
        assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def flat_binary_root(tmp_path: Path) -> Path:
    """images/ + masks/ with no split folders, masks saved as 0/255."""
    root = tmp_path / "flat"
    for i in range(10):
        write_pair(
            root / "images", root / "masks", f"img{i:02d}", 40, 56, 2, seed=i, values=[0, 255]
        )
    return root


def _process_runners(module) -> set[str]:
    """Names of the module's functions (fixtures included) that start a process: call
    ``helpers.segcli`` or ``subprocess``, directly or through another such function of the
    module."""
    found, code = {"segcli", "subprocess"}, {}
    for name, obj in vars(module).items():
        fn = getattr(obj, "__wrapped__", obj)  # a fixture's own function
        if callable(fn) and getattr(fn, "__module__", None) == module.__name__:
            code[name] = getattr(fn, "__code__", None)
    grew = True
    while grew:
        grew = False
        for name, c in code.items():
            if name not in found and c is not None and found & set(_names(c)):
                found.add(name)
                grew = True
    return found


def _names(code) -> set[str]:
    """Global names a code object and its nested functions use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


def is_e2e(function, fixturenames, module, runners: set[str] | None = None) -> bool:
    """The ``e2e`` rule for one test: ``function`` (its code) or one of its ``fixturenames``
    starts a process, directly or through a function or fixture of ``module``
    (``_process_runners``), or it uses the shared ``evaluated_runs`` fixture (CLI runs)."""
    runners = _process_runners(module) if runners is None else runners
    uses = _names(function.__code__) | set(fixturenames)
    return bool(uses & (runners | {"evaluated_runs"}))


# The modules that take longest (seconds of two workers, measured with --durations), first: with
# --dist loadscope and --no-loadscope-reorder (pyproject) xdist hands modules to whichever worker
# is free in this order, so the long ones do not start last and leave one worker idle at the end.
LONGEST_FIRST = [
    "tests/inference/test_export.py",
    "tests/training/test_sweeps.py",
    "tests/cli/test_cli.py",
    "tests/training/test_resume.py",
    "tests/inference/test_inference.py",
    "tests/models/test_architectures.py",
    "tests/metrics/test_bootstrap.py",
    "tests/inference/test_web_export.py",
    "tests/training/test_instance_run.py",
    "tests/inference/test_litert_export.py",
    "tests/data/test_dataset_layouts.py",
    "tests/training/test_cascade_run.py",
    "tests/training/test_rgbd_run.py",
    "tests/weak/test_weak_runs.py",
    "tests/training/test_precision.py",
    "tests/training/test_distributed.py",
]


def pytest_collection_modifyitems(items):
    """Mark ``e2e`` each test that runs segcli (or another program) as a process (``is_e2e``);
    ``pytest -m 'not e2e'`` is the quick loop; CI runs everything. Then put the modules of
    ``LONGEST_FIRST`` first, in its order (the rest keep theirs)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
    runners: dict = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        if module not in runners:
            runners[module] = _process_runners(module)
        if is_e2e(item.function, item.fixturenames, module, runners[module]):
            item.add_marker(pytest.mark.e2e)
