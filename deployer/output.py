"""What the user sees: progress on stderr, results on stdout, errors as one line and a hint."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deployer.errors import DeployError
from deployer.progress import PlainProgress, Progress

if TYPE_CHECKING:
    from deployer.report import Report


def _console(file: TextIO) -> Console:
    """A console that wraps to the terminal, and never truncates in logs (CI, pipes)."""
    width = None if file.isatty() else 200
    return Console(file=file, highlight=False, soft_wrap=True, width=width)


def live_wanted(stream: TextIO, environ: Mapping[str, str], *, quiet: bool, as_json: bool) -> bool:
    """Whether long work is shown live on *stream*: only on a terminal that is not ``TERM=dumb``,
    and not under ``--quiet``, ``--json`` or ``NO_COLOR`` (set to anything but empty)."""
    if quiet or as_json or environ.get("NO_COLOR", "") != "":
        return False
    if environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or a file-like stream
        return False


@dataclass
class Output:
    """Renders progress, tables and errors at the verbosity the user chose.

    ``verbosity``: -1 quiet (errors and results only), 0 normal, 1 verbose.
    Colour is used only on a terminal, and never when ``NO_COLOR`` is set (rich honours it).
    """

    verbosity: int = 0
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        self._out = _console(self.stdout)
        self._err = _console(self.stderr)
        #: where long work reports each change of each host, layer or build step
        self.watch: Progress = PlainProgress(self)

    @contextmanager
    def watching(self, *, as_json: bool = False) -> Iterator[None]:
        """Show the progress of the work inside live on stderr, one line per item, when
        :func:`live_wanted` (never for a result printed *as_json*); else as plain lines, as always."""
        if not live_wanted(self.stderr, os.environ, quiet=self.verbosity < 0, as_json=as_json):
            yield
            return
        from deployer.live import LiveBoard

        previous = self.watch
        with LiveBoard(self._err) as board:
            self.watch = board
            try:
                yield
            finally:
                self.watch = previous

    def progress(self, message: str, *, host: str | None = None) -> None:
        """A step of long work, shown unless quiet."""
        if self.verbosity >= 0:
            self._err.print(self._prefix(host) + escape(message))

    def detail(self, message: str, *, host: str | None = None) -> None:
        """Engine and command detail, shown with --verbose."""
        if self.verbosity >= 1:
            self._err.print(self._prefix(host) + escape(message), style="dim")

    def warn(self, message: str) -> None:
        """Something the user should fix, that does not stop the command (hidden by --quiet)."""
        if self.verbosity >= 0:
            self._err.print(f"[yellow]warning:[/yellow] {escape(message)}")

    def result(self, message: str) -> None:
        """A line of the command's result, on stdout."""
        self._out.print(escape(message))

    def json(self, data: Any) -> None:
        """The command's result as JSON, on stdout."""
        self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        self.stdout.flush()

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        """A result table on stdout."""
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        self._out.print(table)

    def report(self, report: Report) -> None:
        """The per-host summary of a rollout or rollback."""
        rows = [[h.host, h.outcome, h.serving or "-", h.detail] for h in report.hosts]
        verdict = "ok" if report.ok else "FAILED"
        self.table(
            f"{report.action} {report.release or ''}: {verdict}",
            ["host", "outcome", "serving", "detail"],
            rows,
        )

    def error(self, exc: DeployError) -> None:
        """One line for the error, and the hint if it has one."""
        self._err.print(f"[red]error:[/red] {escape(exc.message)}")
        if exc.hint:
            self._err.print(f"  hint: {escape(exc.hint)}")

    @staticmethod
    def _prefix(host: str | None) -> str:
        return f"[cyan]{escape(host)}[/cyan]  " if host else ""
