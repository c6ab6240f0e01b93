"""The `deploy` command line: typer wiring and rendering only, one module per area of verbs.

Heavy modules (docker, paramiko, pydantic models) are imported inside the commands so that
`deploy --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import NoReturn

import typer

from deployer.cli.base import app as app
from deployer.errors import DeployError, UsageError
from deployer.output import Output

# Each module adds its verbs to the app, in the order `deploy --help` lists them.
for _area in ("project", "releases", "day_two", "proxy", "accessory"):
    importlib.import_module(f"deployer.cli.{_area}")


def main() -> NoReturn:
    """Entry point: run the CLI and turn every error into one message and its exit code."""
    out = Output()
    try:
        code = app(prog_name="deploy", standalone_mode=False)  # --help, typer.Exit: an exit code
    except typer.TyperException as exc:  # an unknown verb or flag, a missing or bad value: exit 2
        if exc.format_message():
            out.error(UsageError(exc.format_message(), hint=_usage_hint(exc)))
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        out.stderr.write("interrupted\n")
        sys.exit(130)
    except DeployError as exc:
        out.error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: one line, and the traceback (never with locals) on --verbose
        if "-v" in sys.argv or "--verbose" in sys.argv:
            traceback.print_exc()
        out.error(
            DeployError(
                f"unexpected {type(exc).__name__}: {exc}", hint="run again with --verbose for the traceback"
            )
        )
        sys.exit(DeployError.exit_code)
    if code == 130:  # typer turns a Ctrl-C it catches into this exit code
        out.stderr.write("interrupted\n")
    sys.exit(code if isinstance(code, int) else 0)


_GLOBAL_OPTIONS = ("-i", "--inventory", "-v", "--verbose", "-q", "--quiet")


def _usage_hint(exc: typer.TyperException) -> str:
    """Where to read the right usage; a global option given after the command goes before it."""
    if getattr(exc, "option_name", None) in _GLOBAL_OPTIONS:
        return "global options go before the command: deploy -i PATH status --hosts prod"
    ctx = getattr(exc, "ctx", None)
    return f"see {ctx.command_path if ctx is not None else 'deploy'} --help"
