"""``esrag run FILE.toml``: a declarative train → build → search → eval → sweep → tune recipe.

Each ``[step]`` table holds the long options of ``esrag STEP`` (``shortlist = 20`` means
``--shortlist 20``; ``coarse-index`` or ``coarse_index``; ``true`` for a flag; a list for
a repeatable option). ``[pipeline]`` sets ``index``, ``model``, ``device``, ``batch_size``
and ``quiet`` for every step, and ``root``: the folder relative paths are resolved against
(itself relative to the TOML file; default: the TOML file's folder). ``${VAR}`` is
expanded from the environment. A ``[train]`` step runs first and its ``output`` becomes
the model of the later steps.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from esrag.cli._common import CliError

__all__ = ["add_arguments", "plan", "run"]

STEPS = ("train", "build", "search", "eval", "sweep", "tune")
_SHARED = ("index", "model", "device", "batch_size", "quiet")
_PATH_KEYS = {"corpus", "index", "model", "queries", "qrels", "beir", "output", "train", "base"}
_OUTPUT_KEYS = {"index", "output"}
_POSITIONAL = {"build": "corpus", "search": "query", "run": "recipe"}


def _toml_position(err: Exception, raw: str) -> tuple[int, int, str]:
    """(line, column, message) of a TOML decode error; ``tomllib`` puts the position in the
    message ("... (at line 3, column 7)", "... (at end of document)"), newer Pythons also
    in ``lineno``/``colno``.
    """
    text = str(err)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", text)
    if match:
        return int(match.group(1)), int(match.group(2)), text[: match.start()]
    match = re.search(r"\s*\(at end of document\)\s*$", text)
    end = (raw.count("\n") + 1, len(raw) - raw.rfind("\n"))  # the position just past the text
    if match:
        return end[0], end[1], text[: match.start()]
    line, column = getattr(err, "lineno", None), getattr(err, "colno", None)
    if isinstance(line, int) and isinstance(column, int):
        return line, column, getattr(err, "msg", text)
    return end[0], end[1], text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag run`` arguments to ``p``."""
    p.add_argument("recipe", metavar="FILE.toml", help="pipeline recipe, e.g. pipelines/quickstart.toml")
    p.add_argument(
        "--only", metavar="STEP", action="append", choices=STEPS, help="run only these steps (repeatable)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, e.g. --set pipeline.model=models/mine "
        "--set sweep.target=0.95 (VALUE is read as TOML, else as a string)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")


def _toml() -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError as err:
            raise ImportError(
                "reading pipeline recipes on Python 3.10 needs tomli: pip install tomli"
            ) from err
    return tomllib


class _Recipe:
    def __init__(self, path: Path) -> None:
        tomllib = _toml()
        self.path = path
        try:
            self.raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CliError(f"{path}: no such pipeline file") from None
        except UnicodeDecodeError as err:
            line = path.read_bytes()[: err.start].count(b"\n") + 1
            raise CliError(f"{path}:{line}: not valid UTF-8") from None
        try:
            self.data = tomllib.loads(self.raw)
        except tomllib.TOMLDecodeError as err:
            line, column, message = _toml_position(err, self.raw)
            raise CliError(f"{path}:{line}:{column}: invalid TOML: {message}") from None

    def override(self, item: str) -> None:
        tomllib = _toml()
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise CliError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. pipeline.model=PATH")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        table = self.data.setdefault(section, {})
        if not isinstance(table, dict):
            raise CliError(f"--set {item!r}: [{section}] is not a table")
        table[name] = value

    def line_of(self, section: str, key: str | None = None) -> int | None:
        current = None
        for number, line in enumerate(self.raw.splitlines(), 1):
            head = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
            if head:
                current = head.group(1)
                if key is None and current == section:
                    return number
                continue
            if (
                key is not None
                and current == section
                and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", line)
            ):
                return number
        return None

    def where(self, section: str, key: str | None = None) -> str:
        line = self.line_of(section, key)
        return f"{self.path}:{line}" if line else str(self.path)


def _expand(value: Any, recipe: _Recipe, section: str, key: str) -> Any:
    if isinstance(value, list):
        return [_expand(v, recipe, section, key) for v in value]
    if not isinstance(value, str):
        return value
    out = os.path.expandvars(value)
    missing = re.search(r"\$\{?(\w+)\}?", out)
    if missing:
        raise CliError(
            f"{recipe.where(section, key)}: [{section}] {key}: environment variable "
            f"{missing.group(1)} is not set"
        )
    return out


def _resolve(value: Any, key: str, root: Path) -> Any:
    if isinstance(value, list):
        return [_resolve(v, key, root) for v in value]
    if key not in _PATH_KEYS or not isinstance(value, str) or os.path.isabs(value):
        return value
    candidate = root / value
    if key in _OUTPUT_KEYS or candidate.exists():
        return str(candidate)
    return value


def _option_actions(step: str) -> dict[str, argparse.Action]:
    """The options of ``esrag STEP`` (``--name`` and ``-k`` spellings) and their actions."""
    from esrag.cli.main import build_parser

    parser = build_parser([step])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt: act for act in sub.choices[step]._actions for opt in act.option_strings}


def _flag_args(flag: str, value: Any, action: argparse.Action) -> list[str]:
    """The command-line tokens of one recipe option."""
    if isinstance(value, bool):
        return [flag] if value else []
    if not isinstance(value, list):
        return [flag, str(value)]
    if isinstance(action, argparse._AppendAction):
        return [token for item in value for token in (flag, str(item))]
    if action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1):
        return [flag, *map(str, value)]
    return [flag, ",".join(map(str, value))]


def _argv(step: str, options: dict[str, Any], recipe: _Recipe, defaults: dict[str, Any]) -> list[str]:
    actions = _option_actions(step)
    positional = _POSITIONAL.get(step)
    given = {k.replace("_", "-") for k in options}
    for key, value in defaults.items():
        name = key.replace("_", "-")
        if name not in given and f"--{name}" in actions:
            options = {**options, key: value}
    argv = [step]
    pos_values: list[str] = []
    for key, value in options.items():
        name = key.replace("_", "-")
        if step == "search" and name == "queries":
            name = "query"
        if name == positional:
            pos_values += [str(v) for v in value] if isinstance(value, list) else [str(value)]
            continue
        action = actions.get(f"--{name}") or (actions.get(f"-{name}") if len(name) == 1 else None)
        if action is None:
            raise CliError(
                f"{recipe.where(step, key)}: [{step}] has no option {key!r} (see `esrag {step} --help`)"
            )
        argv += _flag_args(f"-{name}" if len(name) == 1 else f"--{name}", value, action)
    if positional and step in _POSITIONAL:
        if not pos_values:
            raise CliError(f"{recipe.where(step)}: [{step}] needs {positional!r}")
        argv[1:1] = pos_values
    return argv


def plan(recipe: _Recipe, only: list[str] | None = None) -> list[list[str]]:
    """The command lines (one list of arguments per step) a recipe runs, in order."""
    data = recipe.data
    unknown = [name for name in data if name not in (*STEPS, "pipeline")]
    if unknown:
        raise CliError(
            f"{recipe.where(unknown[0])}: unknown section [{unknown[0]}]; expected "
            f"[pipeline] and steps {', '.join(STEPS)}"
        )
    settings = dict(data.get("pipeline", {}))
    root_value = settings.pop("root", ".")
    settings.pop("name", None)
    settings.pop("description", None)
    bad = [k for k in settings if k not in _SHARED]
    if bad:
        raise CliError(
            f"{recipe.where('pipeline', bad[0])}: [pipeline] has no key {bad[0]!r} "
            f"(known: name, description, root, {', '.join(_SHARED)})"
        )
    root = (recipe.path.parent / _expand(root_value, recipe, "pipeline", "root")).resolve()
    shared = {k: _resolve(_expand(v, recipe, "pipeline", k), k, root) for k, v in settings.items()}
    commands: list[list[str]] = []
    for step in STEPS:
        if step not in data or (only and step not in only):
            continue
        table = data[step]
        if not isinstance(table, dict):
            raise CliError(f"{recipe.where(step)}: [{step}] must be a table")
        options = {k: _resolve(_expand(v, recipe, step, k), k, root) for k, v in table.items()}
        if step == "train":
            if "output" in options:
                shared["model"] = options["output"]
            defaults = {k: v for k, v in shared.items() if k == "device"}
        else:
            defaults = shared
        commands.append(_argv(step, options, recipe, defaults))
    if not commands:
        raise CliError(f"{recipe.path}: no steps to run (sections: {', '.join(STEPS)})")
    return commands


def run(args: argparse.Namespace) -> int:
    """Run ``esrag run``: every step of the recipe in order, stopping at the first failure."""
    import shlex

    from esrag.cli.main import build_parser

    recipe = _Recipe(Path(args.recipe))
    for item in args.set:
        recipe.override(item)
    commands = plan(recipe, args.only)
    for argv in commands:
        shown = shlex.join(argv).replace(f"{Path.cwd()}{os.sep}", "")
        print(f"\n== esrag {shown}", flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        step_args = build_parser(argv).parse_args(argv)
        step_args.verbose = args.verbose
        module = __import__(step_args.command_module, fromlist=["run"])
        code = int(module.run(step_args) or 0)
        sys.stdout.flush()
        print(f"-- {argv[0]} done in {time.perf_counter() - start:.1f}s", flush=True)
        if code != 0:
            print(f"esrag run: step {argv[0]} failed with exit code {code}", file=sys.stderr)
            return code
    return 0
