"""The live view on a terminal: one line per item of a :class:`~deployer.progress.Board`, redrawn
as the work moves on (rich's ``Live``). Imported only when a terminal shows it.

Lines printed meanwhile through the same console (warnings, ``switching web1, web2``) appear
above the view; when the work ends, the last state of every line stays on the screen.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from deployer.progress import Board, Phase, Row, Unit

BAR_WIDTH = 24
REFRESHES_PER_SECOND = 8
_STYLES: dict[Phase, str] = {
    "pulled": "green",
    "healthy": "bold green",
    "unchanged": "green",
    "pushed": "green",
    "skipped": "green",
    "failed": "bold red",
    "revert": "yellow",
    "reverted": "yellow",
    "untouched": "yellow",
}


class LiveBoard:
    """A :class:`~deployer.progress.Progress` drawn live on *console* between enter and exit."""

    def __init__(self, console: Console) -> None:
        self.board = Board()
        self._live = Live(
            console=console,
            get_renderable=self.render,
            refresh_per_second=REFRESHES_PER_SECOND,
            transient=False,
        )

    def update(
        self,
        item: str,
        phase: Phase,
        done: int | None = None,
        total: int | None = None,
        *,
        unit: Unit = "layers",
        note: str = "",
    ) -> None:
        """Record the change; the next refresh draws it."""
        self.board.update(item, phase, done, total, unit=unit, note=note)

    def render(self) -> RenderableType:
        """Every row: the item, a bar of what it counts, the count, and its state."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column()  # the one that gives way on a narrow terminal: cut short, never wrapped
        for row in self.board.rows():
            grid.add_row(
                Text(row.item, style="cyan"),
                _bar(row),
                Text(row.count),
                Text(row.state, style=_STYLES.get(row.phase, ""), no_wrap=True, overflow="ellipsis"),
            )
        return grid

    def __enter__(self) -> LiveBoard:
        self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._live.stop()


def _bar(row: Row) -> RenderableType:
    if row.total is None:
        if row.phase in ("pull", "push"):  # started, and its size not known yet
            return ProgressBar(total=None, width=BAR_WIDTH, pulse=True)
        if row.phase == "skipped":  # nothing to send: done
            return ProgressBar(total=1, completed=1, width=BAR_WIDTH)
        return Text("")
    if row.total == 0:  # nothing to pull: the host had the image
        return ProgressBar(total=1, completed=1, width=BAR_WIDTH)
    return ProgressBar(total=row.total, completed=min(row.done or 0, row.total), width=BAR_WIDTH)
