"""One run's session with its hosts: connect, lock, read each host's state, record history.

Both targets (:mod:`deployer.targets.plain`, :mod:`deployer.targets.swarm`) work through a
:class:`Fleet`; neither knows the other. Commands run through one
:class:`~deployer.transport.Transport` per host, created by the injected ``connect``.
"""

from __future__ import annotations

import getpass
import os
import secrets as token_source
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar

from deployer import state
from deployer.commands import Login, RemoteCommand
from deployer.config import DEFAULT_ROLE, App, Inventory
from deployer.errors import ConnectError, DeployError, Interrupted, LockedError, UsageError
from deployer.fanout import Outcome, fan_out
from deployer.inventory import Host
from deployer.output import Output
from deployer.report import HostReport, Report
from deployer.state import Entry, HostState, LockRecord
from deployer.transport import LineReader, Transport

T = TypeVar("T")


def now() -> str:
    """The current time as history and locks record it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def operator() -> str:
    """Who runs deploy, as history records it."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Fleet:
    """The hosts of one run, each with its open connection and the state it reported."""

    inventory: Inventory
    hosts: list[Host]
    out: Output
    cancel: threading.Event
    transports: dict[Host, Transport] = field(default_factory=dict)
    states: dict[Host, HostState] = field(default_factory=dict)
    #: hosts left out of a run that reads (``partial``), with why they could not be reached
    unreachable: dict[Host, DeployError] = field(default_factory=dict)
    #: the registry login hosts use to pull images other than the release (the proxy's)
    login: Login | None = None
    #: the roles the run works on (`--roles`); None: every role of the app
    roles: frozenset[str] | None = None

    @property
    def app(self) -> App:
        """The inventory's app section."""
        return self.inventory.app

    def each(self, hosts: Sequence[Host], work: Callable[[Host], T]) -> dict[Host, Outcome[T]]:
        """Run *work* on every host in parallel; hosts not started before a Ctrl-C are skipped."""

        def guarded(host: Host) -> T:
            if self.cancel.is_set():
                raise Interrupted("interrupted")
            return work(host)

        return fan_out(hosts, guarded, self.inventory.ssh.parallel)

    def run(
        self, host: Host, command: RemoteCommand, timeout: float | None = None, *, on_line: LineReader | None = None
    ) -> str:
        """Run one command on *host* and return its stdout (each line to *on_line* as it comes)."""
        self.out.detail(f"$ {command}", host=host.name)
        if on_line is None:
            return self.transports[host].run(command, timeout).stdout
        return self.transports[host].run(command, timeout, on_line=on_line).stdout

    def read_state(self, host: Host) -> HostState:
        """Ask *host* for the app's containers and history."""
        return self.keep_state(host, self.run(host, state.read_state(self.app)))

    def keep_state(self, host: Host, output: str) -> HostState:
        """Remember the state *host* printed (see :func:`state.parse_state`)."""
        found = state.parse_state(output)
        if found.unreadable:
            self.out.warn(f"{host}: {found.unreadable} unreadable line(s) of its history were skipped")
        self.states[host] = found
        return found

    def record(
        self,
        host: Host,
        action: str,
        release: str,
        digest: str,
        result: str,
        previous: str | None,
        secrets: list[str] | None = None,
        *,
        required: bool = False,
        role: str | None = None,
        command: str | None = None,
    ) -> None:
        """Add a line to the host's history (about *role*, for a role other than web; about the
        *command* of a one-off container). When later decisions depend on it (*required*), a line
        that cannot be written raises; otherwise the host only gets a warning."""
        entry = Entry(now(), action, release, digest, operator(), result, previous, secrets, role, command)
        self.record_all(host, [entry], required=required)

    def entry(
        self, action: str, release: str, digest: str, result: str, previous: str | None, role: str
    ) -> Entry:
        """A history line about *role*, written now by whoever runs deploy."""
        return Entry(
            now(), action, release, digest, operator(), result, previous, None, None if role == DEFAULT_ROLE else role
        )

    def record_all(self, host: Host, entries: list[Entry], *, required: bool = False) -> None:
        """Add *entries* to the host's history in one write: all of them, or none."""
        if not entries:
            return
        try:
            self.run(host, state.append_history(self.app, b"".join(entry.to_json() for entry in entries)))
        except DeployError as exc:
            if required:
                raise type(exc)(f"history not written, so the switch cannot count: {exc.message}") from exc
            self.out.warn(f"{host}: history not written: {exc.message}")

    def history(self) -> dict[str, list[Entry]]:
        """Per host, the recorded releases, oldest first."""
        return {host.name: list(self.states[host].history) for host in self.hosts}


@contextmanager
def open_fleet(
    inventory: Inventory,
    hosts: list[Host],
    *,
    connect: Callable[[Host], Transport],
    out: Output,
    cancel: threading.Event,
    lock_for: str | None = None,
    break_lock: bool = False,
    partial: bool = False,
    login: Login | None = None,
    roles: frozenset[str] | None = None,
) -> Iterator[Fleet]:
    """Connect to every host, take the deploy lock if *lock_for* names the run, read states.

    Any host that cannot be reached or locked ends the run before anything changes, unless the
    run only reads (*partial*): then it goes on with the others and lists the host, and why (no
    SSH, or no state: an engine that does not answer), in ``fleet.unreachable``. Locks taken are
    released and connections closed however the run ends.
    """
    fleet = Fleet(inventory, hosts, out, cancel, login=login, roles=roles)
    record = LockRecord(
        token_source.token_hex(8), getpass.getuser(), socket.gethostname(), os.getpid(), now(),
        lock_for or "", time.time(),
    )
    tried: list[Host] = []

    def connect_host(host: Host) -> None:
        fleet.transports[host] = connect(host)

    try:
        connected = fleet.each(hosts, connect_host)
        if partial:
            fleet.unreachable = {h: o.error for h, o in connected.items() if o.error is not None}
            fleet.hosts = [host for host in hosts if host not in fleet.unreachable]
        else:
            _check(connected)
        if lock_for is None:
            read = fleet.each(fleet.hosts, fleet.read_state)
            if partial:
                fleet.unreachable |= {h: o.error for h, o in read.items() if o.error is not None}
                fleet.hosts = [host for host in fleet.hosts if host not in fleet.unreachable]
            else:
                _check(read)
        else:
            tried = fleet.hosts
            _lock_all(fleet, record, break_lock)
        yield fleet
    finally:
        if tried:
            # Every host tried, whether it answered or not: the release only removes this run's lock.
            fan_out(tried, lambda host: fleet.run(host, state.release_lock(inventory.app, record.token)), len(tried))
        for transport in fleet.transports.values():
            transport.close()


#: seconds a run that holds some hosts waits for a later run holding the others to let them go
CONTENDED_WAIT = 5.0


@dataclass(frozen=True)
class _Held:
    """The lock of a host is another run's (*holder*; None when its lock file is unreadable)."""

    holder: LockRecord | None


def _lock_all(fleet: Fleet, record: LockRecord, break_lock: bool) -> None:
    """Lock every host and read its state, all hosts at once, one round trip each.

    Of two runs started together for overlapping hosts, exactly one goes on: a run that finds
    some hosts held stops at once, unless it holds others and started before every holder (see
    :meth:`LockRecord.precedes`); then the holders stop, and it takes their hosts when they let go.
    """
    pending = list(fleet.hosts)
    deadline = time.monotonic() + CONTENDED_WAIT

    def take(host: Host) -> _Held | None:
        command = state.acquire_lock(fleet.app, record.to_json(), break_first=break_lock)
        result = fleet.transports[host].run(command)
        if result.status == state.LOCK_HELD:
            return _Held(LockRecord.parse(result.stdout))
        fleet.keep_state(host, result.stdout)
        return None

    while True:
        outcomes = fleet.each(pending, take)
        _check(outcomes)
        held = {host: outcome.value for host, outcome in outcomes.items() if outcome.value is not None}
        if not held:
            return
        host, first = min(held.items(), key=lambda item: (item[0].hostname, item[0].port))
        holders = [h.holder for h in held.values()]
        if first.holder is not None and first.holder.token == record.token:
            raise UsageError(
                f"{host}: this run has locked it already under another name: the inventory lists one "
                "machine twice (say, by address and by name); nothing was changed",
                hint="list each machine once",
            )
        holds_some = len(held) < len(fleet.hosts)
        goes_on = holds_some and all(h is not None and record.precedes(h) for h in holders)
        if not goes_on or time.monotonic() >= deadline or fleet.cancel.is_set():
            raise _locked(fleet.app, host, first.holder)
        time.sleep(0.05)
        pending, break_lock = list(held), False


def _check(outcomes: Mapping[Host, Outcome[T]]) -> None:
    failed = {host: outcome.error for host, outcome in outcomes.items() if not outcome.ok}
    if failed:
        raise _first_kind(failed, "nothing was changed")


def _first_kind(failed: Mapping[Host, DeployError | None], consequence: str) -> DeployError:
    """One error for several hosts: the class of the first, every host's reason in the message."""
    errors = [error for error in failed.values() if error is not None]
    first = next((e for e in errors if isinstance(e, LockedError | ConnectError)), errors[0])
    report = Report(
        "open", None, [HostReport(h.name, "unreachable", None, str(e)) for h, e in failed.items()]
    )
    reasons = "\n  ".join(error.message for error in errors)
    return type(first)(f"{reasons}\n{consequence}", hint=first.hint, report=report)


def _locked(app: App, host: Host, holder: LockRecord | None) -> LockedError:
    if holder is None:
        return LockedError(f"{host}: {app.name} is locked (unreadable lock file)", hint="see --break-lock")
    stale = holder.machine == socket.gethostname() and not _alive(holder.pid)
    return LockedError(
        f"{host}: {app.name} is locked by {holder.by}@{holder.machine} (pid {holder.pid}) "
        f"since {holder.since} for {holder.command}"
        + (": that process is gone, the lock is stale" if stale else "")
        + "\nnothing was changed",
        hint="if that run is dead, run again with --break-lock; the run converges every host",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
