"""Render the command-line reference (docs/cli.md) from the typer app itself.

    python -m deployer.clidocs > docs/cli.md

Every verb, option and help text comes from :mod:`deployer.cli`, and the exit codes from
:data:`deployer.errors.EXIT_CODES`; a test keeps the file in step.
"""

from __future__ import annotations

from typing import Any

import typer.core
import typer.main

from deployer.cli import app
from deployer.errors import EXIT_CODES


def command_group() -> typer.core.TyperGroup:
    """The click group typer builds from the app: the verbs and their options."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group


def _option(param: Any) -> str:
    """``-t``, ``--tag TAG``: the short names, then the long ones, with the value's name."""
    names = sorted(param.opts, key=lambda name: (name.startswith("--"), name))
    if not getattr(param, "is_flag", False):
        names[-1] += f" {param.metavar or str(param.name).upper()}"
    return ", ".join(f"`{name}`" for name in names)


def _meaning(param: Any) -> str:
    text = str(getattr(param, "help", None) or "")
    if param.required:
        text += " Required."
    if param.multiple:
        text += " Repeatable."
    return text.replace("|", "\\|").strip()


def _options_table(params: list[Any]) -> list[str]:
    rows = [f"| {_option(param)} | {_meaning(param)} |" for param in params if not param.hidden]
    return ["| option | meaning |", "| --- | --- |", *rows] if rows else ["No options."]


def render() -> str:
    """The Markdown reference of every command, option and exit code."""
    group = command_group()
    lines = [
        "# Command-line reference",
        "",
        "Generated from `deployer/cli/` by `python -m deployer.clidocs`; a test keeps it in step.",
        "`deploy --help`, and `--help` after any command, print the same text.",
        "",
        f"{group.help}",
        "",
        "## Global options",
        "",
        "They go before the command: `deploy -i staging.yaml status --hosts staging`.",
        "",
        *_options_table(group.params),
        "",
        "## Progress",
        "",
        "Progress goes to standard error, results to standard output. On a terminal, `build` shows its",
        "steps, `push` a bar per layer with the bytes sent, and `rollout` and `rollback` one live line",
        "per host: its pull (layers done of total), then its switch and health. Off a terminal (a pipe,",
        "a file, CI), with `--json`, with `NO_COLOR` set, or with `TERM=dumb`, the same work prints plain",
        "lines instead: `Step 3/7 : ...`, `layer ...: pushed`, `<host>  pulled`, `switching <host>`.",
        "`-q` prints neither.",
        "",
    ]
    for name, command in group.commands.items():
        if command.hidden:
            continue
        lines += [
            f"## `deploy {name}`",
            "",
            str(command.help or "").strip(),
            "",
            *_options_table(command.params),
            "",
        ]
    lines += ["## Exit codes", "", "| exit | meaning |", "| --- | --- |"]
    lines += [f"| {code} | {meaning} |" for meaning, code in EXIT_CODES.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
