"""The progress model (what each live line says), the plain lines it stands for, and when the
live view is used at all: only on a terminal, never under --json, -q, NO_COLOR or TERM=dumb."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import TextIO

import pytest
from rich.console import Console

from deployer.live import LiveBoard
from deployer.output import Output, live_wanted
from deployer.progress import Board, PlainProgress, Row, size


def test_a_hosts_line_from_its_pull_to_its_health() -> None:
    board = Board()
    seen = []
    for phase, done, total in [
        ("pull", None, None),
        ("pull", 0, 2),
        ("pull", 1, 2),
        ("pulled", 2, 2),
        ("switch", None, None),
        ("health", None, None),
        ("healthy", None, None),
    ]:
        board.update("web1", phase, done, total)  # type: ignore[arg-type]
        (row,) = board.rows()
        seen.append((row.state, row.count))
    assert seen == [
        ("pulling", ""),
        ("pulling", "0/2 layers"),
        ("pulling", "1/2 layers"),
        ("pulled", "2/2 layers"),
        ("switching", "2/2 layers"),
        ("waiting for health", "2/2 layers"),
        ("healthy", "2/2 layers"),
    ]


def test_rows_keep_the_order_items_first_appeared_in() -> None:
    board = Board()
    board.update("web2", "pull")
    board.update("web1", "pull")
    board.update("web2", "failed", note="pull refused")
    board.update("web1", "pulled", 0, 0)
    assert board.rows() == [
        Row("web2", "failed", note="pull refused"),
        Row("web1", "pulled", 0, 0),
    ]
    assert [(row.state, row.count) for row in board.rows()] == [
        ("failed: pull refused", ""),
        ("pulled", "image already here"),
    ]


def test_a_layers_push_counts_bytes_and_ends_full() -> None:
    board = Board()
    board.update("fdca386dc4db", "push", unit="bytes")
    assert board.rows()[0].count == ""
    board.update("fdca386dc4db", "push", 33792, 1982256, unit="bytes")
    assert board.rows()[0].count == "33.8 kB/2.0 MB"
    board.update("fdca386dc4db", "pushed")
    assert board.rows()[0] == Row("fdca386dc4db", "pushed", 1982256, 1982256, "bytes")
    # the engine does not always know a layer's size, nor send exactly that many bytes
    assert Row("l", "push", 1536, None, "bytes").count == "1.5 kB"
    assert Row("l", "push", 2560, 3, "bytes").count == "2.6 kB"
    assert Row("l", "skipped", note="already in the registry").state == "skipped: already in the registry"


def test_a_builds_line_shows_its_step() -> None:
    row = Row("build", "step", 3, 7, "steps", "COPY www /www")
    assert (row.state, row.count) == ("COPY www /www", "step 3/7")


def test_sizes_read_as_people_read_them() -> None:
    assert [size(n) for n in (0, 999, 1000, 33792, 1982256, 999_999_999, 12_300_000_000)] == [
        "0 B", "999 B", "1.0 kB", "33.8 kB", "2.0 MB", "1000.0 MB", "12.3 GB",
    ]  # fmt: skip


def test_plain_progress_prints_the_lines_deploy_always_printed_and_nothing_else() -> None:
    stderr = io.StringIO()
    plain = PlainProgress(Output(stdout=io.StringIO(), stderr=stderr))
    plain.update("172.30.57.11", "pull")
    plain.update("172.30.57.11", "pull", 1, 2)
    plain.update("172.30.57.11", "pulled", 2, 2)
    plain.update("172.30.57.11", "switch")
    plain.update("172.30.57.11", "healthy")
    plain.update("build", "step", 2, 7, unit="steps", note="COPY busybox /bin/busybox")
    plain.update("fdca386dc4db", "push", 1, 2, unit="bytes")
    plain.update("fdca386dc4db", "pushed")
    plain.update("3f640debe6e6", "skipped", note="already in the registry")
    plain.update("13ff630b2381", "skipped", note="mounted from acme/base")
    assert stderr.getvalue().splitlines() == [
        "172.30.57.11  pulled",
        "Step 2/7 : COPY busybox /bin/busybox",
        "layer fdca386dc4db: pushed",
        "layer 3f640debe6e6: already in the registry, skipped",
        "layer 13ff630b2381: mounted from acme/base, skipped",
    ]


def test_the_live_view_draws_one_line_per_host_with_a_bar() -> None:
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    live = LiveBoard(console)
    live.update("172.30.57.11", "pull", 1, 2)
    live.update("172.30.57.12", "pulled", 2, 2)
    live.update("172.30.57.12", "healthy")
    live.update("172.30.57.13", "pull")
    console.print(live.render())
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[0].startswith("172.30.57.11  ━━━━━━━━━━━━") and lines[0].endswith("  1/2 layers  pulling")
    assert lines[1] == "172.30.57.12  " + "━" * 24 + "  2/2 layers  healthy"
    assert lines[2].startswith("172.30.57.13  ") and lines[2].endswith("pulling"), "a bar that waits"
    assert len(lines) == 3


# ---------------------------------------------------------------- live or plain


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """A real pseudo-terminal to write to."""
    leader, follower = os.openpty()
    stream = os.fdopen(follower, "w")
    try:
        yield stream
    finally:
        stream.close()
        os.close(leader)


@pytest.mark.parametrize(
    ("environ", "quiet", "as_json", "live"),
    [
        ({"TERM": "xterm-256color"}, False, False, True),
        ({}, False, False, True),
        ({"TERM": "xterm", "NO_COLOR": ""}, False, False, True),
        ({"TERM": "xterm", "NO_COLOR": "1"}, False, False, False),
        ({"TERM": "dumb"}, False, False, False),
        ({"TERM": "xterm"}, True, False, False),
        ({"TERM": "xterm"}, False, True, False),
    ],
)
def test_live_only_on_a_terminal_that_wants_it(
    terminal: TextIO, environ: dict[str, str], quiet: bool, as_json: bool, live: bool
) -> None:
    assert live_wanted(terminal, environ, quiet=quiet, as_json=as_json) is live


def test_never_live_off_a_terminal() -> None:
    assert live_wanted(io.StringIO(), {"TERM": "xterm"}, quiet=False, as_json=False) is False


def test_watching_swaps_in_the_live_view_on_a_terminal_only(
    terminal: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = Output(stdout=io.StringIO(), stderr=terminal)
    with out.watching():
        assert isinstance(out.watch, LiveBoard)
        out.watch.update("web1", "pull", 1, 2)
    assert isinstance(out.watch, PlainProgress), "plain again afterwards"
    with out.watching(as_json=True):
        assert isinstance(out.watch, PlainProgress)
    quiet = Output(verbosity=-1, stdout=io.StringIO(), stderr=terminal)
    with quiet.watching():
        assert isinstance(quiet.watch, PlainProgress)
    piped = Output(stdout=io.StringIO(), stderr=io.StringIO())
    with piped.watching():
        assert isinstance(piped.watch, PlainProgress)
    monkeypatch.setenv("NO_COLOR", "1")
    with out.watching():
        assert isinstance(out.watch, PlainProgress)
