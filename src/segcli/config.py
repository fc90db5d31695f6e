"""The only module that talks to Hydra: where conf/ is, checking overrides and values, running a
job.

`segcli train ARGS` hands ARGS to Hydra's own runner (``hydra.main``), so everything Hydra
offers works unchanged: overrides, ``--cfg job``, ``--config-dir``, ``-m`` multirun, launcher and
sweeper plugins, ``hydra.run.dir=``. Before that, a single run's overrides are composed once
with Hydra's compose API so that a mistake (unknown key or option, a missing required value)
is reported as one line with exit code 2 instead of Hydra's multi-line report.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser  # the flags exactly as hydra.main reads them
from omegaconf import DictConfig, OmegaConf

from segcli.errors import SegcliError

GROUPS = (
    "task",
    "dataset",
    "model",
    "loss",
    "augmentation",
    "trainer",
    "optimizer",
    "scheduler",
    "logger",
    "experiment",
)


def config_dir() -> Path:
    """The packaged configs: ``segcli/conf`` in a built wheel, ``<repo>/conf`` in a source
    checkout or editable install.

    Raises:
        SegcliError: neither exists (a broken install).
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SegcliError(f"{here}/conf: segcli's config folder is missing; reinstall segcli")


def group_options(extra_dirs: Sequence[Path] = ()) -> dict[str, list[str]]:
    """``{group: [option names]}`` from the YAML files of conf/ and any user config dirs."""
    options: dict[str, set[str]] = {g: set() for g in GROUPS}
    for root in (config_dir(), *extra_dirs):
        for group in GROUPS:
            options[group].update(p.stem for p in (Path(root) / group).glob("*.yaml"))
    return {g: sorted(v) for g, v in options.items()}


def one_line(exc: BaseException) -> str:
    """Hydra and OmegaConf messages are multi-line; join their lines (and the cause's) into one."""
    parts = []
    for e in (exc, exc.__cause__):
        if e is not None:
            parts += [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " ".join(dict.fromkeys(parts))
    return text.split(" Config search path:")[
        0
    ]  # Hydra's list of search paths says nothing useful here


def compose_config(
    overrides: Sequence[str], config_name: str = "train", user_config_dir: str | None = None
) -> DictConfig:
    """Compose the config as ``segcli train`` would (without the ``hydra`` node) and resolve it.

    Raises:
        SegcliError: unknown config key or group option, bad override syntax, a missing
            required (``???``) value, or a broken interpolation.
    """
    extra = list(overrides)
    if user_config_dir:
        extra.append(f"hydra.searchpath=[file://{Path(user_config_dir).resolve()}]")
    try:
        with initialize_config_dir(
            config_dir=str(config_dir()), version_base="1.3", job_name=config_name
        ):
            cfg = compose(config_name=config_name, overrides=extra)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # hydra.errors.*, omegaconf.errors.*: all user input problems here
        raise SegcliError(f"config: {one_line(exc)}") from exc
    return cfg


# Hydra's flags that only choose or print the composed config: the ones a command that composes
# the training config without running it (segcli data check, segcli bench) takes as train does.
COMPOSE_FLAGS = "--config-dir/-cd, --config-name/-cn, --cfg job, --resolve, --package/-p"


def parse_hydra_args(args: Sequence[str], command: str) -> argparse.Namespace:
    """``args`` parsed by Hydra's own argument parser (the flags exactly as ``hydra.main`` reads
    them; ``overrides`` holds the rest).

    Raises:
        SegcliError: an option Hydra does not know (named), or a flag without its value.
    """
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            parsed, unknown = get_args_parser().parse_known_args(list(args))
    except SystemExit:  # argparse's usage and error lines: e.g. a flag without its value
        reason = usage.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1]
        raise SegcliError(f"{command}: {reason}; see {command} --help") from None
    if unknown:
        flags = ("-m/--multirun, " if command == "segcli train" else "") + COMPOSE_FLAGS
        raise SegcliError(
            f"{command}: unknown option {unknown[0]}; it takes OVERRIDES (key=value, group=option) "
            f"and Hydra's flags ({flags}); see {command} --help"
        )
    return parsed


def check_train_args(args: Sequence[str]) -> None:
    """Compose a single run's overrides once to report mistakes early (see module docstring).

    Multirun sweeps (``-m``) and Hydra's informational flags are left to Hydra.

    Raises:
        SegcliError: an unknown option (``parse_hydra_args``), or as ``compose_config``.
    """
    parsed = parse_hydra_args(args, "segcli train")
    if (
        parsed.multirun
        or parsed.info
        or parsed.shell_completion
        or parsed.help
        or parsed.hydra_help
    ):
        return
    compose_config(parsed.overrides, parsed.config_name or "train", parsed.config_dir)


@dataclass(frozen=True)
class ComposedCommand:
    """The training config as a command other than train composes it from its trailing arguments.

    ``cfg``: the composed, resolvable config (no ``hydra`` node); ``show``: with ``--cfg job``, the
    YAML to print instead of running the command (resolved with ``--resolve``; the ``--package``
    node only with ``-p``), else None.
    """

    cfg: DictConfig
    show: str | None


def compose_command(
    args: Sequence[str], command: str, extra: Sequence[str] = ()
) -> ComposedCommand:
    """Compose the training config from a command's trailing ``args`` as ``segcli train ARGS``
    would: overrides plus Hydra's ``--config-dir``/``-cd``, ``--config-name``/``-cn``, ``--cfg``,
    ``--resolve`` and ``--package``. ``extra`` overrides go after the user's (the command's own
    options, e.g. bench's ``--crop``).

    Raises:
        SegcliError: an unknown option, a flag that runs jobs (``-m``, ``--info``, ...) or
            ``--cfg hydra`` (segcli train's alone), or as ``compose_config``.
    """
    parsed = parse_hydra_args(args, command)
    train_only = {
        "-m/--multirun": parsed.multirun,
        "--info": parsed.info,
        "--hydra-help": parsed.hydra_help,
        "--shell-completion": parsed.shell_completion,
        "--run": parsed.run,
        "--experimental-rerun": parsed.experimental_rerun,
        "--config-path/-cp": parsed.config_path,
        "--cfg hydra": parsed.cfg == "hydra",
    }
    for flag, given in train_only.items():
        if given:
            raise SegcliError(
                f"{command}: {flag} is segcli train's; {command} composes one config "
                f"(it takes {COMPOSE_FLAGS})"
            )
    cfg = compose_config(
        [*parsed.overrides, *extra], parsed.config_name or "train", parsed.config_dir
    )
    show = None
    if parsed.cfg:
        node = OmegaConf.select(cfg, parsed.package) if parsed.package else cfg
        if node is None:
            raise SegcliError(f"{command}: --package {parsed.package}: no such node in the config")
        show = OmegaConf.to_yaml(node, resolve=parsed.resolve)
    return ComposedCommand(cfg, show)


def sweep_args(args: Sequence[str]) -> list[str]:
    """``args`` plus ``hydra.sweep.dir=multirun/NAME-HASH`` for a multirun without its own sweep
    folder (``default_sweep_dir``: a re-run of the same command resumes the same sweep). Optuna and
    other sweepers that sample keep Hydra's dated folder, as do single runs."""
    args = list(args)
    try:
        parsed = get_args_parser().parse_args(args)
    except SystemExit:
        return args
    own = any(o.startswith(("hydra.sweep.dir=", "hydra/sweeper=")) for o in parsed.overrides)
    if not parsed.multirun or own:
        return args
    return _with_overrides(args, parsed, [f"hydra.sweep.dir={default_sweep_dir(parsed.overrides)}"])


def _with_overrides(args: list[str], parsed, extra: list[str]) -> list[str]:
    """``args`` with ``extra`` overrides placed right after the last given override (or after
    ``-m``, or at the start): Hydra's argparse takes one run of positional arguments."""
    given = [i for i, a in enumerate(args) if a in parsed.overrides]
    flag = [i for i, a in enumerate(args) if a in ("-m", "--multirun")]
    anchor = max(given) if given else (flag[0] if flag else -1)
    return [*args[: anchor + 1], *extra, *args[anchor + 1 :]]


def distributed_args(args: Sequence[str]) -> list[str]:
    """Under torchrun: ranks other than 0 let Hydra write into a throw-away temporary folder
    (``hydra.output_subdir=null``); they train in rank 0's run folder (see
    cli.train._train_distributed).

    Raises:
        SegcliError: a multirun (``-m``): torchrun runs one training, sweep around it.
    """
    import os
    import tempfile

    args = list(args)
    parsed = get_args_parser().parse_args(args)
    if parsed.multirun:
        raise SegcliError(
            "-m under torchrun: torchrun runs one training; run the sweep outside torchrun"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        return args
    return _with_overrides(
        args,
        parsed,
        ["hydra.output_subdir=null", f"hydra.run.dir={tempfile.mkdtemp(prefix='segcli-rank')}"],
    )


def _run_dir_name(name, date: str, time: str, arch: str, encoder: str) -> str:
    """``hydra.run.dir`` below outputs/: ``run.name`` when set, else ``DATE/TIME_ARCH-ENCODER``."""
    if name not in (None, ""):
        return str(name)
    return f"{date}/{time}_{arch}" + (
        f"-{encoder}" if encoder not in (None, "", "none", "None") else ""
    )


OmegaConf.register_new_resolver("segcli_run_dir", _run_dir_name, replace=True)


def run_hydra(
    task: Callable[[DictConfig], object], args: Sequence[str], config_name: str = "train"
) -> None:
    """Run ``task(cfg)`` under Hydra's own runner with command-line ``args``."""
    import hydra

    argv, sys.argv = sys.argv, [f"segcli {config_name}", *args]
    try:
        hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(
            task
        )()
    finally:
        sys.argv = argv


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain dicts and lists (for checkpoints and the jobs)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def run_seed(cfg: Mapping) -> int:
    """The run's seed: ``trainer.seed`` (which defaults to the root ``seed``)."""
    return int(cfg["trainer"].get("seed", cfg["seed"]))


# (dotted key, lowest allowed value, whether null is allowed, whether it must be an integer)
NUMBER_RULES = (
    ("trainer.epochs", 1, False, True),
    ("trainer.batch_size", 1, False, True),
    ("trainer.eval_batch_size", 1, False, True),
    ("trainer.num_workers", 0, False, True),
    ("trainer.val_every", 1, False, True),
    ("trainer.max_minutes", 1e-9, True, False),
    ("trainer.checkpoint_minutes", 1e-9, True, False),
    ("trainer.grad_clip", 1e-12, True, False),
    ("optimizer.lr", 1e-12, False, False),
    ("dataset.num_classes", 1, True, True),
    ("dataset.scale", 1e-3, False, False),
)


def check_config(cfg: Mapping) -> None:
    """Check the numbers of a resolved config before anything is built.

    Raises:
        SegcliError: the first value of ``NUMBER_RULES`` that is not a number, is too small, or
            is not an integer where one is needed; names the key and what was expected.
    """
    for key, low, nullable, integer in NUMBER_RULES:
        section, name = key.split(".")
        if name not in cfg.get(section, {}):
            continue
        value = cfg[section][name]
        if value is None and nullable:
            continue
        kind = "an integer" if integer else "a number"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
        if not ok or (integer and not float(value).is_integer()):
            bound = f">= {low}" if integer or low >= 1 else "> 0"
            raise SegcliError(
                f"{key}={value}: expected {kind} {bound}" + (" or null" if nullable else "")
            )


def default_sweep_dir(overrides: Sequence[str]) -> str:
    """``multirun/NAME-HASH`` for a sweep command: NAME is ``run.name`` when given, else ``sweep``;
    HASH the first 8 hex digits of the SHA-1 of the sorted overrides (the same command, the same
    folder)."""
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.name=")), "sweep")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "sweep"
    digest = hashlib.sha1("\n".join(sorted(overrides)).encode()).hexdigest()[:8]
    return f"multirun/{name}-{digest}"


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
