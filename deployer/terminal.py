"""The local terminal of `deploy exec -it`: raw mode for the session's length, and its size."""

from __future__ import annotations

import os
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

#: the size assumed when the terminal does not say
DEFAULT_SIZE = (80, 24)


def is_terminal(stream: TextIO) -> bool:
    """True when *stream* is a terminal."""
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def kind() -> str:
    """The terminal type the remote side is told: the local ``TERM``, else ``xterm``."""
    return os.environ.get("TERM") or "xterm"


def size(fd: int) -> Callable[[], tuple[int, int]]:
    """A function giving the terminal's current (width, height)."""

    def now() -> tuple[int, int]:
        try:
            columns, lines = os.get_terminal_size(fd)
        except OSError:
            return DEFAULT_SIZE
        return (columns or DEFAULT_SIZE[0], lines or DEFAULT_SIZE[1])

    return now


@contextmanager
def raw(fd: int) -> Iterator[None]:
    """Put the terminal in raw mode (every key goes through, Ctrl-C included) and restore it after,
    however the block ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
