"""What the user sees: progress on stderr, results on stdout, errors as one line and a hint."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deployer.errors import DeployError

if TYPE_CHECKING:
    from deployer.report import Report


def _console(file: TextIO) -> Console:
    """A console that wraps to the terminal, and never truncates in logs (CI, pipes)."""
    width = None if file.isatty() else 200
    return Console(file=file, highlight=False, soft_wrap=True, width=width)


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
