"""How long work tells the user where it is: a host's pull and switch, a push's layers, a build's steps.

Work reports each change through a :class:`Progress`, item by item ("web1", a layer's id,
"build"): its phase and, when it counts something, how much of how much. It never knows how
that is shown. :class:`PlainProgress` turns the few changes that always had a line of their own
(a host's pull done, a build step, a layer pushed) into those same lines and ignores the rest;
on a terminal, :mod:`deployer.live` draws a :class:`Board` of every item, one live line each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from deployer.output import Output

#: what an item is doing: a host ("pull" … "untouched"), a build ("step"), a layer ("push" …)
Phase = Literal[
    "pull",  # its image is being pulled: done/total layers (or bytes)
    "pulled",
    "switch",  # running the switch's commands (create, stop, start, route)
    "health",  # waiting for the new release's health check
    "drain",  # waiting for the requests in flight to the old release
    "revert",  # being put back on its previous release
    "healthy",  # switched, and its release passed the health check: done
    "unchanged",  # already served the release: done
    "failed",
    "reverted",  # put back on its previous release: done
    "untouched",  # not reached before the run stopped
    "step",  # a build step: done/total steps, its instruction as the note
    "push",  # a layer being pushed: done/total bytes
    "pushed",
    "skipped",  # a layer the registry had already (the note says how)
]
#: what done and total count
Unit = Literal["layers", "bytes", "steps"]

_WORDS: dict[Phase, str] = {
    "pull": "pulling",
    "pulled": "pulled",
    "switch": "switching",
    "health": "waiting for health",
    "drain": "draining the old release",
    "revert": "putting back",
    "healthy": "healthy",
    "unchanged": "unchanged",
    "failed": "failed",
    "reverted": "put back",
    "untouched": "not reached",
    "step": "",
    "push": "pushing",
    "pushed": "pushed",
    "skipped": "skipped",
}
#: the phases that end what an item counts: its bar is full
_COMPLETE: frozenset[Phase] = frozenset({"pulled", "pushed"})


class Progress(Protocol):
    """Hears how each item of long work moves on. Called from any thread."""

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
        """*item* is now in *phase*, with *done* of *total* units when given (else as it was)."""
        ...


class PlainProgress:
    """Progress as the plain lines `deploy` has always printed: a host's ``pulled``, each build
    step, each layer pushed or skipped. Counts and the other phases print nothing."""

    def __init__(self, out: Output) -> None:
        self.out = out

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
        """Print the line this change always had, if any."""
        if phase == "pulled":
            self.out.progress("pulled", host=item)
        elif phase == "step":
            self.out.progress(f"Step {done}/{total} : {note}")
        elif phase == "pushed":
            self.out.progress(f"layer {item}: pushed")
        elif phase == "skipped":
            self.out.progress(f"layer {item}: {note}, skipped")


@dataclass(frozen=True)
class Row:
    """One item as the live view shows it."""

    item: str
    phase: Phase
    done: int | None = None
    total: int | None = None
    unit: Unit = "layers"
    note: str = ""

    @property
    def state(self) -> str:
        """What it does, in words: ``pulling``, ``healthy``, ``failed: …``, a build step's instruction."""
        words = _WORDS[self.phase]
        if self.phase == "step":
            return self.note
        return f"{words}: {self.note}" if self.note else words

    @property
    def count(self) -> str:
        """How much is done: ``3/5 layers``, ``1.2/4.5 MB``, ``step 3/7``; empty when nothing is counted."""
        done = self.done or 0
        if self.unit == "bytes" and self.done is not None:
            # the engine's size of a layer is not always known, nor always what it sends
            return size(done) if self.total is None or done > self.total else f"{size(done)}/{size(self.total)}"
        if self.total is None or (self.total == 0 and self.unit != "layers"):
            return ""
        if self.unit == "steps":
            return f"step {done}/{self.total}"
        if self.total == 0:
            return "image already here"
        return f"{done}/{self.total} layers"


def size(count: int) -> str:
    """Bytes as people read them: ``512 B``, ``12.3 kB``, ``4.5 MB``, ``1.2 GB`` (powers of 1000)."""
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


class Board:
    """Every item seen so far, in the order they first appeared, each with its latest row."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._lock = threading.Lock()

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
        """Move *item* to *phase*. Counts not given stay as they were (a host's layers stay on its
        line while it switches), but a phase that ends the count fills it; a new unit replaces them."""
        with self._lock:
            old = self._rows.get(item)
            if old is None or (old.unit != unit and (done is not None or total is not None)):
                self._rows[item] = Row(item, phase, done, total, unit, note)
                return
            total = old.total if total is None else total
            if done is None:
                done = total if phase in _COMPLETE and total is not None else old.done
            self._rows[item] = replace(old, phase=phase, done=done, total=total, note=note)

    def rows(self) -> list[Row]:
        """The rows, in order."""
        with self._lock:
            return list(self._rows.values())
