"""The rule by which conftest marks a test ``e2e`` (it starts segcli or another program as a
process), on a module of made-up tests: direct calls, calls through the module's functions and
fixtures (nested too), the shared ``evaluated_runs`` fixture, and tests that start nothing."""

from __future__ import annotations

import types

from conftest import is_e2e

SOURCE = """
import subprocess

import pytest


def segcli(*args):  # a stand-in for helpers.segcli
    return args


def helper():
    return segcli("train")


def indirect():
    return helper()


def quiet():
    return 1


def spawns():
    subprocess.run(["true"], check=True)


@pytest.fixture
def trained():
    return indirect()


def t_direct():
    segcli("eval")


def t_indirect():
    indirect()


def t_nested():
    def inner():
        return helper()

    return inner


def t_spawns():
    spawns()


def t_quiet():
    return quiet()
"""


def _module() -> types.ModuleType:
    module = types.ModuleType("made_up_tests")
    exec(compile(SOURCE, "made_up_tests", "exec"), module.__dict__)  # noqa: S102 - our own text
    return module


def test_a_test_is_e2e_when_it_or_what_it_uses_starts_a_process():
    module = _module()
    names = ["t_direct", "t_indirect", "t_nested", "t_spawns", "t_quiet"]
    marked = [n for n in names if is_e2e(getattr(module, n), ["tmp_path"], module)]
    assert marked == ["t_direct", "t_indirect", "t_nested", "t_spawns"]
    assert is_e2e(module.t_quiet, ["tmp_path", "trained"], module)  # through a fixture
    assert is_e2e(module.t_quiet, ["evaluated_runs"], module)  # the shared CLI runs
    assert not is_e2e(module.t_quiet, ["tmp_path", "monkeypatch"], module)
