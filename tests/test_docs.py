"""README.md and docs/*.md checked against the repository and the real command line.

- Every relative link points to a file or folder of the repository, and every ``#anchor`` to a
  heading of the target file (GitHub's slugs).
- Every ``segcli ...`` command, in fenced bash/sh blocks (line continuations, pipes, ``$(...)``,
  ``for ...; do ...; done``, ``torchrun ... -m segcli``, ``.venv/bin/segcli``) and in inline code
  spans that start with ``segcli ``, is parsed against the Typer app (``segcli.cli.app.app``): the
  command exists, every option is one of its click parameters (for ``train``: or a Hydra flag,
  parsed by Hydra's own argument parser, as ``segcli train`` hands them on), and every Hydra
  override of the commands that take them (train, bench, data check; ``inference.KEY=VALUE`` of
  eval and predict) names a config group option of conf/ and a key of the composed config. Values
  are not checked (docs write ``DIR``, ``RUN``, ``$seed``); ``+key=value`` adds a key and is not
  checked either.

No training, no torch: the Typer app imports torch only when a command runs a model.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# The README's set-up block: CI (.ci/run) and the maintainers run exactly these two lines.
README_COMMANDS = """\
```bash
python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/segcli train
python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest
```"""

# Commands the docs show that fail against today's CLI, each with the reason; the exact command as
# checked ("segcli " + its arguments). test_the_allow_list_is_current fails when one of them passes
# (or leaves the docs): then take it out of this list.
ALLOWED_FAILURES: dict[str, str] = {}

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
# RUN_DIR, OVERRIDES..., COMMAND, ...: a word the reader replaces
# Hydra's flags that segcli data check and bench take (segcli.config.compose_command): how many
# values each consumes.
COMPOSE_FLAGS = {
    "--config-dir": 1,
    "-cd": 1,
    "--config-name": 1,
    "-cn": 1,
    "--cfg": 1,
    "-c": 1,
    "--resolve": 0,
    "--package": 1,
    "-p": 1,
}
PLACEHOLDER = re.compile(r"^(\.\.\.|…|[A-Z][A-Z0-9_]*(\.\.\.)?)$")
SHELL_KEYWORDS = {"do", "then", "else", "elif", "time", "!", "{", "}", "exec", "nohup"}
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(\s+#+)?\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
OVERRIDE_KEY = re.compile(r"^[+~]*[A-Za-z_][\w./-]*=")
NOT_A_CHOICE = re.compile(r"[$]|^(null|\?\?\?)$")  # $loss: a shell variable; null: no option


# --- markdown -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block (``lang`` its info string) or a paragraph of text (``lang`` None)."""

    lang: str | None
    line: int  # 1-based line of its first line
    text: str


def blocks(markdown: str) -> list[Block]:
    """The fenced code blocks and the paragraphs (text between blank lines) of a markdown file."""
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    para: list[str] = []
    para_start = 0

    def flush() -> None:
        if para:
            out.append(Block(None, para_start + 1, "\n".join(para)))
            para.clear()

    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            flush()
            mark, start, body = fence.group(1), i, []
            i += 1
            while i < len(lines) and not re.match(
                rf"^\s*{re.escape(mark[0])}{{{len(mark)},}}\s*$", lines[i]
            ):
                body.append(lines[i])
                i += 1
            out.append(Block(fence.group(2).lower(), start + 2, "\n".join(body)))
        elif not lines[i].strip():
            flush()
        else:
            if not para:
                para_start = i
            para.append(lines[i])
        i += 1
    flush()
    return out


def code_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every inline code span (CommonMark: a run of N backticks up to
    the next run of exactly N; line breaks inside become spaces, one space either side is
    stripped)."""
    spans, i = [], 0
    while i < len(text):
        if text[i] != "`":
            i += 1
            continue
        n = len(text) - i - len(text[i:].lstrip("`"))
        end = re.compile(rf"(?<!`)`{{{n}}}(?!`)").search(text, i + n)
        if not end:
            i += n
            continue
        content = text[i + n : end.start()].replace("\n", " ")
        if content.startswith(" ") and content.endswith(" ") and content.strip():
            content = content[1:-1]
        spans.append((i, end.end(), content))
        i = end.end()
    return spans


def without_code(text: str) -> str:
    """The text with each code span replaced by ``x`` (links are read from the rest)."""
    for start, end, _ in reversed(code_spans(text)):
        text = text[:start] + "x" + text[end:]
    return text


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text, lower-cased, spaces to hyphens, every
    character but letters, digits, ``-`` and ``_`` dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor in a markdown file (a repeated one gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for block in blocks(markdown):
        if block.lang is not None:
            continue
        for line in block.text.splitlines():
            match = HEADING.match(line)
            if not match:
                continue
            base = slug(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(path: Path, markdown: str, root: Path = REPO) -> list[str]:
    """Relative links of ``markdown`` (the file ``path``) whose file or heading does not exist."""
    problems = []
    for block in blocks(markdown):
        if block.lang is not None:
            continue
        for target in LINK.findall(without_code(block.text)):
            if re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)", target):
                continue  # https:, mailto:, ...
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve()
            where = f"{path.name}:{block.line}: ({target})"
            if not file_part:
                if anchor not in anchors(markdown):
                    problems.append(f"{where}: no heading #{anchor} here")
            elif not dest.is_relative_to(root.resolve()):
                problems.append(f"{where}: leaves the repository")
            elif not dest.exists():
                problems.append(f"{where}: {dest.relative_to(root.resolve())} does not exist")
            elif anchor and dest.suffix == ".md":
                if anchor not in anchors(dest.read_text(encoding="utf-8")):
                    problems.append(f"{where}: no heading #{anchor} in {dest.name}")
            elif anchor and not re.match(r"^L\d+(-L\d+)?$", anchor):
                problems.append(f"{where}: #{anchor} into a file that has no headings")
    return problems


# --- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    args: tuple[str, ...]  # the words after ``segcli``
    inline: bool

    @property
    def text(self) -> str:
        return " ".join(("segcli", *self.args))


def shell_segments(line: str) -> list[str]:
    """A shell line cut into simple commands at ``;``, ``|``, ``&``, ``$(``, ``(`` and ``)``
    outside quotes; a ``#`` that starts a word ends the line."""
    segments, current, quote, i = [], "", None, 0
    while i < len(line):
        c = line[i]
        if quote:
            current += c
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"' and i + 1 < len(line):
                current += line[i + 1]
                i += 1
        elif c in "'\"":
            quote = c
            current += c
        elif c == "\\" and i + 1 < len(line):
            current += line[i : i + 2]
            i += 1
        elif c == "#" and (not current or current[-1].isspace()):
            break
        elif c in ";|&()" or line.startswith("$(", i):
            segments.append(current)
            current = ""
            i += line.startswith("$(", i)
        else:
            current += c
        i += 1
    segments.append(current)
    return [s for s in segments if s.strip()]


def segcli_args(words: list[str]) -> list[str] | None:
    """The arguments after ``segcli`` of one simple command, or None when it runs something else:
    ``segcli``, ``.venv/bin/segcli``, ``torchrun ... -m segcli``, ``python -m segcli``, after shell
    keywords (``do``) and ``NAME=value`` assignments."""
    while words and (words[0] in SHELL_KEYWORDS or re.match(r"^[A-Za-z_]\w*=", words[0])):
        words = words[1:]
    if not words:
        return None
    head = Path(words[0]).name
    if head == "segcli":
        return words[1:]
    if head == "torchrun" or re.match(r"^python(3(\.\d+)?)?$", head):
        for i in range(1, len(words) - 1):
            if words[i] == "-m":
                return words[i + 2 :] if words[i + 1] == "segcli" else None
    return None


def unbracket(words: list[str]) -> list[str]:
    """A synopsis as written in prose (``segcli runs [DIR...] [--format table|csv|json]``) as
    arguments: brackets, ``|`` between alternatives and ``...`` repeat marks dropped."""
    out = []
    for word in words:
        if word in ("|", "[", "]", "]..."):
            continue
        word = word.removeprefix("[")
        for _ in range(2):
            if len(word) > 3 and word.endswith("..."):
                word = word[:-3]
            while word.endswith("]") and word.count("]") > word.count("["):
                word = word[:-1]
        if word:
            out.append(word)
    return out


def commands(path_name: str, markdown: str) -> tuple[list[Command], list[str]]:
    """Every segcli command of a markdown file, and the problems of reading them (a quote left
    open; a segcli line in a code block not marked as shell, which would escape the check)."""
    found: list[Command] = []
    problems: list[str] = []
    for block in blocks(markdown):
        if block.lang in SHELL_LANGUAGES:
            logical, start = "", block.line
            for n, line in enumerate(block.text.splitlines(), block.line):
                if not logical:
                    start = n
                if line.rstrip().endswith("\\"):
                    logical += line.rstrip()[:-1] + " "
                    continue
                logical += line
                for segment in shell_segments(logical):
                    try:
                        args = segcli_args(shlex.split(segment))
                    except ValueError as exc:
                        problems.append(f"{path_name}:{start}: {segment.strip()!r}: {exc}")
                        continue
                    if args is not None:
                        found.append(Command(f"{path_name}:{start}", tuple(args), False))
                logical = ""
        elif block.lang is not None:
            for n, line in enumerate(block.text.splitlines(), block.line):
                if re.match(r"^\s*(\$\s*)?segcli\s", line):
                    problems.append(f"{path_name}:{n}: a segcli command in a ```{block.lang} block")
        else:
            for offset, _, content in code_spans(block.text):
                if not content.startswith("segcli "):
                    continue
                line = block.line + block.text.count("\n", 0, offset)
                try:
                    words = shlex.split(content)
                except ValueError as exc:
                    problems.append(f"{path_name}:{line}: `{content}`: {exc}")
                    continue
                found.append(Command(f"{path_name}:{line}", tuple(unbracket(words)[1:]), True))
    return found, problems


def top_level_split(value: str) -> list[str]:
    """``a,b,c`` -> its sweep values; commas inside brackets, braces, parentheses or quotes stay."""
    parts, depth, quote, current = [], 0, None, ""
    for c in value:
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += c
    return [*parts, current]


def conf_groups() -> set[str]:
    """The config groups of ``segcli train``: the folders of conf/ (inference is infer.yaml's)."""
    return {p.name for p in CONF.iterdir() if p.is_dir()} - {"inference"}


class Checker:
    """Checks one command's arguments against the click group of the Typer app and conf/."""

    def __init__(self, group) -> None:
        self.root = group
        self._composed: dict[tuple, object] = {}
        self.groups = {"train": conf_groups(), "infer": {"inference"}}

    def compose(self, config_name: str, choices: tuple[str, ...]):
        """The config ``segcli train`` (or eval's ``infer``) composes from these group overrides,
        the ``hydra`` node included; a string when it does not compose. ``segcli.config`` finds
        the config folder; the composition is ``compose_config``'s (the same Hydra compose call),
        less its resolving: commands in the docs leave required values such as ``dataset.root``
        to the reader, which ``compose_config`` would refuse."""
        key = (config_name, choices)
        if key not in self._composed:
            from hydra import compose, initialize_config_dir

            from segcli.config import config_dir

            try:
                with initialize_config_dir(
                    config_dir=str(config_dir()), version_base="1.3", job_name=config_name
                ):
                    self._composed[key] = compose(
                        config_name=config_name, overrides=list(choices), return_hydra_config=True
                    )
            except Exception as exc:  # noqa: BLE001 - hydra.errors.*: the option is the problem
                self._composed[key] = " ".join(str(exc).split())[:300]
        return self._composed[key]

    def check(self, args: list[str] | tuple[str, ...]) -> list[str]:
        """What is wrong with ``segcli ARGS`` (an empty list when nothing)."""
        args = list(args)
        problems: list[str] = []
        cmd, path, i = self.root, ["segcli"], 0
        while hasattr(cmd, "commands"):
            while i < len(args) and args[i].startswith("-"):
                i, _, _ = self._option(cmd, path, args, i, problems)
            if i >= len(args) or PLACEHOLDER.match(args[i]):
                return problems  # `segcli data`, `segcli --debug COMMAND`
            if args[i] not in cmd.commands:
                have = ", ".join(sorted(cmd.commands))
                return [*problems, f"{' '.join(path)} has no command {args[i]!r} (it has: {have})"]
            cmd = cmd.commands[args[i]]
            path.append(args[i])
            i += 1
        if path == ["segcli", "train"]:
            return problems + self._train(cmd, args[i:])
        takes_overrides = bool(cmd.context_settings.get("ignore_unknown_options"))
        positional, inference, user_dir = [], "whole", False
        while i < len(args):
            if args[i] == "--":
                positional += args[i + 1 :]
                break
            if args[i].startswith("-") and len(args[i]) > 1:
                if takes_overrides and not self._has_option(cmd, args[i]):
                    # Hydra's flags that only compose (config.compose_command), with their values
                    if args[i] in COMPOSE_FLAGS:
                        user_dir = user_dir or args[i] in ("--config-dir", "-cd")
                        i += 1 + COMPOSE_FLAGS[args[i]]
                        continue
                    problems.append(
                        f"{' '.join(path)} has no option {args[i]} (its trailing arguments "
                        "are Hydra overrides and the flags that compose: "
                        f"{', '.join(COMPOSE_FLAGS)})"
                    )
                    i += 1
                    continue
                i, name, value = self._option(cmd, path, args, i, problems)
                if name == "--inference" and value is not None:
                    inference = value
            else:
                positional.append(args[i])
                i += 1
        if takes_overrides:
            return problems + self.overrides(positional, "train", multirun=False, user_dir=user_dir)
        if self._has_option(cmd, "--inference"):
            wrong = [
                p
                for p in positional
                if OVERRIDE_KEY.match(p) and not p.lstrip("+~").startswith("inference.")
            ]
            problems += [f"{w}: eval and predict take inference.KEY=VALUE only" for w in wrong]
            chosen = [] if PLACEHOLDER.match(inference) else [f"inference={inference}"]
            wanted = [p for p in positional if p.lstrip("+~").startswith("inference.")]
            problems += self.overrides(chosen + wanted, "infer", multirun=False, user_dir=False)
        return problems

    @staticmethod
    def _params(cmd) -> dict[str, object]:
        return {
            opt: p
            for p in cmd.params
            if p.param_type_name == "option"
            for opt in (*p.opts, *p.secondary_opts)
        }

    def _has_option(self, cmd, word: str) -> bool:
        return word.split("=", 1)[0] in self._params(cmd) or word == "--help"

    def _option(self, cmd, path, args, i, problems) -> tuple[int, str | None, str | None]:
        """Consume the option at ``args[i]`` (and its value): ``(next index, name, value)``."""
        name, eq, value = args[i].partition("=") if args[i].startswith("--") else (args[i], "", "")
        if name == "--help":
            return i + 1, name, None
        param = self._params(cmd).get(name)
        if param is None:
            options = ", ".join(sorted(self._params(cmd))) or "none"
            problems.append(f"{' '.join(path)} has no option {name} (it has: {options})")
            return i + 1, None, None
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            if eq:
                problems.append(f"{name} is a flag: it takes no value")
            return i + 1, name, None
        if eq:
            return i + 1, name, value
        if i + 1 >= len(args):
            problems.append(f"{name} needs a value")
            return i + 1, name, None
        return i + 2, name, args[i + 1]

    def _train(self, cmd, args: list[str]) -> list[str]:
        """``segcli train``: its own options (``--resume``, ``--allow-changes``) for click, the
        rest for Hydra's own argument parser (what ``config.check_train_args`` and ``hydra.main``
        read)."""
        from hydra._internal.utils import get_args_parser

        problems: list[str] = []
        own = self._params(cmd)
        hydra_args, i = [], 0
        while i < len(args):
            if args[i].split("=", 1)[0] in own or args[i] == "--help":
                i, _, _ = self._option(cmd, ["segcli", "train"], args, i, problems)
            else:
                hydra_args.append(args[i])
                i += 1
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parsed, unknown = get_args_parser().parse_known_args(hydra_args)
        except SystemExit:
            return [*problems, f"Hydra's parser refuses it: {' '.join(errors.getvalue().split())}"]
        for word in unknown:
            what = "option" if word.startswith("-") else "argument"
            problems.append(
                f"segcli train has no {what} {word} (neither its own nor one of Hydra's flags)"
            )
        name = parsed.config_name or "train"
        if not parsed.config_dir and not (CONF / f"{name}.yaml").is_file():
            problems.append(f"--config-name {name}: no conf/{name}.yaml")
            return problems
        overrides = [o for o in parsed.overrides if not o.startswith("resume=")]
        return problems + self.overrides(
            overrides, name, multirun=parsed.multirun, user_dir=bool(parsed.config_dir)
        )

    def overrides(self, words, config_name: str, multirun: bool, user_dir: bool) -> list[str]:
        """Hydra overrides: every ``group=option`` names a file of conf/GROUP/ (or Hydra's plugin
        configs, for ``hydra/...``), every dotted key exists in the config composed with the
        command's options, for each option of a swept group. ``user_dir``: ``--config-dir`` was
        given, so an option missing from conf/ may be the user's (its keys are then not checked)."""
        problems: list[str] = []
        choices: dict[str, list[str]] = {}
        keys: list[str] = []
        unknown_groups: set[str] = set()
        groups = self.groups.get(config_name, conf_groups())
        for word in words:
            if PLACEHOLDER.match(word) or word.startswith("+"):
                continue  # OVERRIDES..., +new.key=value
            body = word.removeprefix("~")
            key, eq, value = body.partition("=")
            if not eq and not word.startswith("~"):
                problems.append(f"{word}: not a Hydra override (KEY=VALUE or GROUP=OPTION)")
                continue
            values = top_level_split(value) if eq else []
            if len(values) > 1 and not multirun:
                problems.append(f"{word}: a sweep (a,b,...) needs -m")
            if "/" in key or key in groups:
                options = [re.sub(r"^choice\((.*)\)$", r"\1", v).strip() for v in values]
                options = [o for o in options if not NOT_A_CHOICE.search(o)]
                options = [o for o in options if not PLACEHOLDER.match(o)]
                if "/" not in key:
                    missing = [o for o in options if not (CONF / key / f"{o}.yaml").is_file()]
                    if missing and user_dir:
                        unknown_groups.add(key)  # the user's own conf file
                        options = [o for o in options if o not in missing]
                    elif missing:
                        have = ", ".join(sorted(p.stem for p in (CONF / key).glob("*.yaml")))
                        problems += [f"{key}={o}: no conf/{key}/{o}.yaml ({have})" for o in missing]
                        options = [o for o in options if o not in missing]
                if options:
                    choices[key] = options
            else:
                keys.append(key)
        base = {g: opts[0] for g, opts in choices.items()}
        variants = [base] + [{**base, g: o} for g, opts in choices.items() for o in opts[1:]]
        for variant in variants:
            cfg = self.compose(config_name, tuple(f"{g}={o}" for g, o in sorted(variant.items())))
            if isinstance(cfg, str):
                problems.append(f"{' '.join(f'{g}={o}' for g, o in variant.items())}: {cfg}")
                continue
            for key in keys:
                if key.split(".")[0] in unknown_groups:
                    continue
                if not _has_key(cfg, key):
                    shown = ", ".join(f"{g}={o}" for g, o in sorted(variant.items()))
                    problems.append(
                        f"{key}: no such key in the composed config ({shown or 'the defaults'})"
                    )
        return list(dict.fromkeys(problems))


def _has_key(cfg, dotted: str) -> bool:
    from omegaconf import OmegaConf

    node = cfg  # walked by hand: select() takes a required value (``???``) for a missing key
    for part in dotted.split("."):
        if not OmegaConf.is_dict(node) or part not in list(node.keys()):
            return False
        node = node._get_node(part)
    return True


# --- the docs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker(_cli())


def _cli():
    import typer.main

    from segcli.cli.app import app

    return typer.main.get_command(app)


def _doc_commands() -> tuple[list[Command], list[str]]:
    found, problems = [], []
    for path in DOCS:
        cmds, probs = commands(str(path.relative_to(REPO)), path.read_text(encoding="utf-8"))
        found += cmds
        problems += probs
    return found, problems


def _command_problems(checker: Checker, cmds: list[Command]) -> dict[str, list[str]]:
    out = {}
    for cmd in cmds:
        problems = checker.check(cmd.args)
        if problems:
            out.setdefault(cmd.text, []).extend(f"{cmd.where}: {p}" for p in problems)
    return out


def test_the_readme_keeps_its_two_commands():
    assert README_COMMANDS in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_readme_links_every_guide():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall(without_code(readme))}
    assert len(DOCS) > 8
    assert [p.name for p in DOCS[1:] if p.resolve() not in linked] == []


def test_every_relative_link_resolves():
    problems = [p for path in DOCS for p in link_problems(path, path.read_text(encoding="utf-8"))]
    assert problems == []


def test_every_command_in_the_docs_parses_against_the_cli(checker):
    cmds, read_problems = _doc_commands()
    assert read_problems == []
    fenced = [c for c in cmds if not c.inline]
    inline = [c for c in cmds if c.inline]
    assert len(fenced) > 25 and len(inline) > 40 and len(cmds) > 80, (len(fenced), len(inline))
    # every command family appears, so an extractor that misses a kind of command fails here
    assert {c.args[0] for c in cmds if c.args} >= {
        "train",
        "eval",
        "predict",
        "export",
        "runs",
        "compare",
        "plot",
        "report",
        "models",
        "bench",
        "data",
    }
    failing = _command_problems(checker, cmds)
    unexpected = {cmd: probs for cmd, probs in failing.items() if cmd not in ALLOWED_FAILURES}
    assert unexpected == {}


def test_the_allow_list_is_current(checker):
    cmds, _ = _doc_commands()
    failing = _command_problems(checker, cmds)
    for cmd, why in ALLOWED_FAILURES.items():
        assert cmd in {c.text for c in cmds}, f"{cmd!r} is no longer in the docs ({why})"
        assert cmd in failing, f"{cmd!r} passes now: take it out of ALLOWED_FAILURES"


# --- the checker itself: it must fail on mistakes ----------------------------------------------


BAD_COMMANDS = {
    "unknown command": ("segcli evaluate best.pt", "no command 'evaluate'"),
    "unknown option": ("segcli eval RUN/checkpoints/best.pt --wurst 8", "no option --wurst"),
    "unknown short option": ("segcli predict x.png -x out/", "no option -x"),
    "flag with a value": ("segcli export best.pt --quantize=yes", "--quantize is a flag"),
    "unknown group option": ("segcli train model=unet9000", "model=unet9000: no conf/model/"),
    "unknown swept option": ("segcli train -m loss=dice,dicey", "loss=dicey: no conf/loss/"),
    "unknown key": ("segcli train trainer.epochz=3", "trainer.epochz: no such key"),
    "key of another option": ("segcli train model.params.stride=16", "model.params.stride"),
    "unknown hydra key": (
        "segcli train -m hydra/launcher=joblib hydra.launcher.n_jobz=2",
        "hydra.launcher.n_jobz",
    ),
    "unknown hydra group option": ("segcli train -m hydra/launcher=jobl", "hydra/launcher=jobl"),
    "unknown hydra flag": ("segcli train --cfgg job", "--cfgg"),
    "bad hydra flag value": ("segcli train --cfg everything", "Hydra's parser refuses it"),
    "sweep without -m": ("segcli train seed=0,1,2", "needs -m"),
    "not an override": ("segcli train fpn", "fpn: not a Hydra override"),
    "hydra flag to data check": (
        "segcli data check -m dataset=synthetic,folder",
        "no option -m",
    ),
    "bench key": ("segcli bench trainer.batch_sise=4 --crop 256", "trainer.batch_sise"),
    "inference key": (
        "segcli eval best.pt --inference slide inference.crops=[256,256]",
        "inference.crops",
    ),
    "inference preset": ("segcli predict a.png --inference sliding", "inference=sliding"),
    "train key to eval": ("segcli eval best.pt trainer.epochs=3", "inference.KEY=VALUE only"),
    "resume option": ("segcli train --resum RUN_DIR", "--resum"),
}


@pytest.mark.parametrize("name", sorted(BAD_COMMANDS))
def test_the_checker_catches(checker, name):
    command, expected = BAD_COMMANDS[name]
    doc = f"Try `{command}` or:\n\n```bash\n{command}\n```\n"
    cmds, problems = commands("doc.md", doc)
    assert problems == [] and len(cmds) == 2
    for cmd in cmds:
        found = checker.check(cmd.args)
        assert any(expected in p for p in found), found


GOOD_DOC = r"""
Run `segcli train --resume RUN_DIR --allow-changes trainer.epochs=300`, see
`segcli runs [DIR...] [--sort KEY] [--filter EXPR]... [--format table|csv|json]` and
`segcli export CHECKPOINT -o DIR [--opset 18] [--size HxW | --dynamic] [--quantize]`.

```bash
run=$(segcli train dataset=camvid model.encoder_name=resnet34 | tail -1)   # a comment
for seed in 0 1 2; do for loss in dice_ce lovasz; do
  segcli train loss=$loss trainer.epochs=2 seed=$seed \
      hydra.run.dir=runs/${loss}_s$seed && segcli eval runs/x/best.pt --split test
done; done
torchrun --nproc_per_node=4 -m segcli train model=deeplabv3plus dataset=camvid
.venv/bin/segcli train -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 \
    'optimizer.lr=interval(1e-4,1e-2)' +extra.key=1
segcli train --config-dir myconf dataset=mine dataset.whatever=1 --cfg job --resolve
segcli data check dataset=voc dataset.aug=true --json out.json
segcli eval best.pt --inference crf inference.flip=true inference.crf.iterations=5
segcli --debug COMMAND
```
"""


def test_the_extractor_reads_shell_and_prose(checker):
    cmds, problems = commands("doc.md", GOOD_DOC)
    assert problems == []
    assert [c.args[:2] for c in cmds] == [
        ("train", "--resume"),
        ("runs", "DIR"),
        ("export", "CHECKPOINT"),
        ("train", "dataset=camvid"),
        ("train", "loss=$loss"),
        ("eval", "runs/x/best.pt"),
        ("train", "model=deeplabv3plus"),
        ("train", "-m"),
        ("train", "--config-dir"),
        ("data", "check"),
        ("eval", "best.pt"),
        ("--debug", "COMMAND"),
    ]
    assert cmds[1].args == (
        "runs",
        "DIR",
        "--sort",
        "KEY",
        "--filter",
        "EXPR",
        "--format",
        "table|csv|json",
    )
    assert "--dynamic" in cmds[2].args and "hydra.run.dir=runs/${loss}_s$seed" in cmds[4].args
    assert "'" not in " ".join(cmds[7].args) and cmds[3].where == "doc.md:7"
    assert {c.text: checker.check(c.args) for c in cmds} == {c.text: [] for c in cmds}


def test_a_renamed_option_fails_the_docs_test():
    """What the docs test sees after someone renames eval's --worst in code."""
    group = _cli()
    (param,) = [p for p in group.commands["eval"].params if "--worst" in p.opts]
    param.opts = ["--worst-images"]
    cmds, _ = _doc_commands()
    failing = _command_problems(Checker(group), cmds)
    assert any("no option --worst " in p for probs in failing.values() for p in probs)


def test_a_renamed_config_key_fails_the_docs_test(monkeypatch):
    """What the docs test sees after someone renames trainer.max_minutes in conf/."""
    from omegaconf import open_dict

    compose = Checker.compose

    def without_max_minutes(self, config_name, choices):
        cfg = compose(self, config_name, choices)
        if not isinstance(cfg, str) and "trainer" in cfg:
            with open_dict(cfg):
                cfg.trainer.pop("max_minutes", None)
        return cfg

    monkeypatch.setattr(Checker, "compose", without_max_minutes)
    cmds, _ = _doc_commands()
    failing = _command_problems(Checker(_cli()), cmds)
    assert any("trainer.max_minutes: no such key" in p for v in failing.values() for p in v)


LINK_DOC = """# Guide

## Which run is really better

## Which run is really better

## Paper recipes: `experiment=`

See [the top](#guide), [twice](#which-run-is-really-better-1), [recipes](#paper-recipes-experiment),
[conf](../conf/train.yaml), [web](https://example.com/x), [code `[x](y)`](#guide).

Broken: [gone](missing.md), [no heading](#nowhere), [other](../README.md#no-such-heading).
"""


def test_the_link_checker_catches_missing_files_and_headings():
    problems = link_problems(REPO / "docs" / "guide.md", LINK_DOC)
    assert len(problems) == 3, problems
    assert "missing.md" in problems[0] and "#nowhere" in problems[1]
    assert "no-such-heading" in problems[2]
    assert slug("Models: the literature's architectures") == "models-the-literatures-architectures"
    assert slug("bf16 on the CPU") == "bf16-on-the-cpu"
