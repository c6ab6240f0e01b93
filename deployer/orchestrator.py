"""Decide the order of work on the fleet: lock, pull everywhere, switch in batches, revert.

The promise kept here: when a run ends, every host it touched serves a release that passed
its health check, and the fleet is on one release unless the user allowed failures
(`app.rollout.max_failures`). Commands come from :mod:`deployer.plan`; they run through a
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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import SecretStr

from deployer import commands, plan
from deployer.config import Inventory
from deployer.errors import (
    CommandError,
    ConnectError,
    DeployError,
    Interrupted,
    LockedError,
    RolloutError,
    UsageError,
)
from deployer.fanout import fan_out
from deployer.inventory import Host
from deployer.output import Output
from deployer.plan import Release
from deployer.releases import Entry, HostState, parse_state
from deployer.transport import Transport


@dataclass
class HostReport:
    """What happened on one host, and what it serves now."""

    host: str
    outcome: str
    serving: str | None
    detail: str = ""


@dataclass
class Report:
    """The per-host result of a run."""

    action: str
    release: str | None
    hosts: list[HostReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no host failed."""
        return all(h.outcome not in ("failed", "reverted", "unreachable") for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "action": self.action,
            "release": self.release,
            "ok": self.ok,
            "hosts": [asdict(h) for h in self.hosts],
        }


class HostFailed(DeployError):
    """One host failed its switch; carries what it serves after being put back."""

    def __init__(self, message: str, serving: str | None, outcome: str = "reverted") -> None:
        super().__init__(message)
        self.serving = serving
        self.outcome = outcome


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _operator() -> str:
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

    @property
    def app(self) -> Any:
        """The inventory's app section."""
        return self.inventory.app

    def each(self, hosts: Sequence[Host], work: Callable[[Host], Any]) -> dict[Host, Any]:
        """Run *work* on every host in parallel; hosts not started before a Ctrl-C are skipped."""

        def guarded(host: Host) -> Any:
            if self.cancel.is_set():
                raise Interrupted("interrupted")
            return work(host)

        return fan_out(hosts, guarded, self.inventory.ssh.parallel)

    def run(self, host: Host, command: commands.RemoteCommand, timeout: float | None = None) -> str:
        """Run one command on *host* and return its stdout."""
        self.out.detail(f"$ {command}", host=host.name)
        return self.transports[host].run(command, timeout).stdout

    def read_state(self, host: Host) -> HostState:
        """Ask *host* for the app's containers and history."""
        state = parse_state(self.run(host, commands.read_state(self.app)))
        self.states[host] = state
        return state


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
) -> Iterator[Fleet]:
    """Connect to every host, take the deploy lock if *lock_for* names the run, read states.

    Any host that cannot be reached or locked ends the run before anything changes. Locks
    taken are released and connections closed however the run ends.
    """
    fleet = Fleet(inventory, hosts, out, cancel)
    token = token_source.token_hex(8)
    locked: list[Host] = []

    def check(outcomes: Mapping[Host, Any]) -> None:
        failed = {host: outcome.error for host, outcome in outcomes.items() if not outcome.ok}
        if failed:
            raise _first_kind(failed, "nothing was changed")

    def connect_host(host: Host) -> None:
        fleet.transports[host] = connect(host)

    try:
        check(fleet.each(hosts, connect_host))
        if lock_for is not None:
            # One host after the other, in one global order: of two runs started together,
            # the one that locks the first shared host wins and the other stops at once.
            for host in sorted(hosts, key=lambda h: (h.hostname, h.port)):
                _lock(fleet, host, token, lock_for, break_lock)
                locked.append(host)
        check(fleet.each(hosts, fleet.read_state))
        yield fleet
    finally:
        if locked:
            fan_out(
                locked, lambda host: fleet.run(host, commands.release_lock(inventory.app, token)), len(locked)
            )
        for transport in fleet.transports.values():
            transport.close()


def _first_kind(failed: Mapping[Host, DeployError | None], consequence: str) -> DeployError:
    """One error for several hosts: the class of the first, every host's reason in the message."""
    errors = [error for error in failed.values() if error is not None]
    first = next((e for e in errors if isinstance(e, LockedError | ConnectError)), errors[0])
    report = Report(
        "open", None, [HostReport(h.name, "unreachable", None, str(e)) for h, e in failed.items()]
    )
    reasons = "\n  ".join(error.message for error in errors)
    return type(first)(f"{reasons}\n{consequence}", hint=first.hint, report=report)


def _lock(fleet: Fleet, host: Host, token: str, purpose: str, break_lock: bool) -> None:
    app = fleet.app
    if break_lock:
        fleet.run(host, commands.break_lock(app))
    record = plan.LockRecord(token, getpass.getuser(), socket.gethostname(), os.getpid(), _now(), purpose)
    result = fleet.transports[host].run(commands.acquire_lock(app, record.to_json()))
    if result.status != commands.LOCK_HELD:
        return
    holder = plan.LockRecord.parse(result.stdout)
    if holder is None:
        raise LockedError(f"{host}: {app.name} is locked (unreadable lock file)", hint="see --break-lock")
    stale = holder.machine == socket.gethostname() and not _alive(holder.pid)
    raise LockedError(
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


# ---------------------------------------------------------------- health


def wait_healthy(fleet: Fleet, host: Host, name: str) -> None:
    """Wait until container *name* on *host* is healthy, then watch it; raise CommandError if not."""
    check = fleet.app.healthcheck
    started = time.monotonic()
    deadline = started + check.timeout
    last = "no answer yet"
    while True:
        if fleet.cancel.is_set():
            raise Interrupted(f"{host}: interrupted while waiting for health")
        info = plan.parse_inspect(fleet.run(host, commands.inspect(name)))
        if info.crashed:
            raise _unhealthy(fleet, host, name, f"the container exited with code {info.exit_code}", info)
        if check.path is not None and check.port is not None:
            url = plan.health_url(info, check.port, check.path)
            code = fleet.run(host, commands.http_probe(url, min(2.0, check.timeout))).strip() or "000"
            if code.startswith("2"):
                break
            last = f"GET {url} " + ("got no answer" if code == "000" else f"answered {code}")
        elif info.health:
            if info.health == "healthy":
                break
            last = f"Docker HEALTHCHECK says {info.health}"
        elif time.monotonic() - started >= plan.RUNNING_GRACE:
            break
        else:
            last = "waiting for the container to keep running"
        if time.monotonic() >= deadline:
            raise _unhealthy(fleet, host, name, f"not healthy within {check.timeout:g} s: {last}", info)
        time.sleep(check.interval)
    watch_until = time.monotonic() + check.watch
    while time.monotonic() < watch_until:
        time.sleep(min(check.interval, max(0.0, watch_until - time.monotonic())))
        info = plan.parse_inspect(fleet.run(host, commands.inspect(name)))
        if info.crashed or info.health == "unhealthy":
            raise _unhealthy(fleet, host, name, f"crashed within the {check.watch:g} s watch window", info)


def _unhealthy(fleet: Fleet, host: Host, name: str, reason: str, info: plan.ContainerInfo) -> CommandError:
    try:
        result = fleet.transports[host].run(commands.logs(name))
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
    except DeployError:
        tail = []
    logs = ("; last log lines: " + " | ".join(tail)) if tail else ""
    restarts = f" after {info.restarts} restart(s)" if info.restarts else ""
    return CommandError(f"{name} {reason}{restarts}{logs}")


# ---------------------------------------------------------------- switching


def _activate(fleet: Fleet, host: Host, step: plan.Switch, previous: str | None) -> None:
    """Run a planned switch; on failure put the host back on *previous* and raise HostFailed."""
    for command in step.prepare:
        fleet.run(host, command)
    try:
        if step.stop_old is not None:
            fleet.run(host, step.stop_old)
        fleet.run(host, step.start_new)
        wait_healthy(fleet, host, step.target)
    except ConnectError:
        raise
    except DeployError as exc:
        serving = _undo(fleet, host, step, previous)
        raise HostFailed(f"{exc.message}; {_serving_text(serving)}", serving) from exc


def _undo(fleet: Fleet, host: Host, step: plan.Switch, previous: str | None) -> str | None:
    """Run the switch's undo; return the release the host serves afterwards (None if nothing)."""
    try:
        for command in step.undo:
            fleet.run(host, command)
        if previous is not None:
            wait_healthy(fleet, host, commands.container_name(fleet.app, previous))
        return previous
    except DeployError as exc:
        fleet.out.warn(f"{host}: could not put {previous} back: {exc.message}")
        return None


def _serving_text(serving: str | None) -> str:
    return f"put back on {serving}" if serving else "serving nothing"


def record(
    fleet: Fleet,
    host: Host,
    action: str,
    release: str,
    digest: str,
    result: str,
    previous: str | None,
    secrets: list[str] | None = None,
) -> None:
    """Append a line to the host's history; a host that cannot be written to only gets a warning."""
    entry = Entry(_now(), action, release, digest, _operator(), result, previous, secrets)
    try:
        fleet.run(host, commands.append_history(fleet.app, entry.to_json()))
    except DeployError as exc:
        fleet.out.warn(f"{host}: history not written: {exc.message}")


def _switch_in_batches(
    fleet: Fleet,
    report: Report,
    digest_of: Callable[[Host], str],
    plan_for: Callable[[Host], plan.Switch | None],
) -> None:
    """Switch hosts batch by batch; past `max_failures` or on Ctrl-C, put every switched host back."""
    app, action, release = fleet.app, report.action, report.release or ""
    previous = {host: fleet.states[host].current for host in fleet.hosts}
    steps: dict[Host, plan.Switch | None] = {}
    switched: list[Host] = []
    failed: dict[Host, DeployError] = {}

    def halted() -> bool:
        return len(failed) > app.rollout.max_failures or fleet.cancel.is_set()

    for batch in plan.batches(fleet.hosts, app.rollout.batch_size):
        if halted():
            break
        steps.update({host: plan_for(host) for host in batch})
        fleet.out.progress(f"switching {', '.join(h.name for h in batch)}")

        def switch(host: Host) -> None:
            step = steps[host]
            if step is not None:
                _activate(fleet, host, step, previous[host])

        for host, outcome in fleet.each(batch, switch).items():
            if outcome.error is None:
                switched.append(host)
            else:
                failed[host] = outcome.error

    put_back: dict[Host, str | None] = {}
    if halted():
        to_undo = [host for host in switched if steps[host] is not None]
        if to_undo:
            fleet.out.progress(f"putting {', '.join(h.name for h in to_undo)} back on their previous release")
        undone = fleet.each(to_undo, lambda host: _undo(fleet, host, steps[host], previous[host]))  # type: ignore[arg-type]
        put_back = {host: outcome.value for host, outcome in undone.items()}

    results: dict[Host, str] = {}  # what each host's history records
    for host in fleet.hosts:
        error = failed.get(host)
        if host in put_back:
            serving = put_back[host]
            outcome = "reverted" if serving == previous[host] else "failed"
            report.hosts.append(HostReport(host.name, outcome, serving, "put back because the run stopped"))
            results[host] = "reverted"
        elif error is not None:
            kind = "unreachable" if isinstance(error, ConnectError) else "failed"
            serving = error.serving if isinstance(error, HostFailed) else None
            if isinstance(error, Interrupted):
                kind, serving = "reverted", previous[host]
            report.hosts.append(HostReport(host.name, kind, serving, error.message))
            results[host] = "failed"
        elif host in switched:
            changed = steps[host] is not None
            if changed or fleet.states[host].activations()[-1:] != [release]:
                results[host] = "ok"
            report.hosts.append(HostReport(host.name, "switched" if changed else "unchanged", release))
        else:
            report.hosts.append(
                HostReport(host.name, "untouched", previous[host], "not reached: the run stopped")
            )

    fan_out(
        list(results),
        lambda host: record(fleet, host, action, release, digest_of(host), results[host], previous[host]),
        fleet.inventory.ssh.parallel,
    )
    if fleet.cancel.is_set():
        raise Interrupted(f"{action} interrupted; switched hosts were put back", report=report)
    if len(failed) > app.rollout.max_failures:
        raise RolloutError(
            f"{action} of {release} failed on {len(failed)} host(s); "
            + ("every switched host was put back" if put_back else "no other host was switched"),
            report=report,
        )


# ---------------------------------------------------------------- verbs


def rollout(
    fleet: Fleet,
    release: Release,
    *,
    password: SecretStr | None,
    secrets: Mapping[str, SecretStr],
) -> Report:
    """Pull *release* on every host, then switch them batch by batch, health-gated."""
    app = fleet.app
    report = Report("rollout", release.tag)
    fleet.out.progress(f"pulling {release.reference} on {len(fleet.hosts)} host(s)")

    def pull(host: Host) -> None:
        for command in plan.pull_steps(release, app.registry, password):
            fleet.run(host, command)
        fleet.out.progress("pulled", host=host.name)

    pulled = fleet.each(fleet.hosts, pull)
    failed = {host: outcome.error for host, outcome in pulled.items() if not outcome.ok}
    if fleet.cancel.is_set():
        raise Interrupted("rollout interrupted while pulling; no container was replaced")
    if failed:
        report.hosts = [
            HostReport(
                h.name,
                "failed" if h in failed else "untouched",
                fleet.states[h].current,
                str(failed.get(h) or ""),
            )
            for h in fleet.hosts
        ]
        reasons = "\n  ".join(str(error) for error in failed.values())
        raise RolloutError(f"pull failed, so no container was replaced:\n  {reasons}", report=report)

    def plan_for(host: Host) -> plan.Switch | None:
        state = fleet.states[host]
        running = state.running
        if running is not None and running.release == release.tag and running.digest == release.digest:
            return None
        return plan.switch(app, state, release.tag, image=release, secrets=secrets)

    _switch_in_batches(fleet, report, lambda host: release.digest, plan_for)
    _prune(fleet, release.tag)
    return report


def rollout_plan(
    fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
) -> dict[str, list[str]]:
    """What `rollout` would run on each host, in order, given what each host runs now."""
    app = fleet.app
    plans = {}
    for host in fleet.hosts:
        state = fleet.states[host]
        lines = [str(command) for command in plan.pull_steps(release, app.registry, password)]
        running = state.running
        if running is not None and running.release == release.tag and running.digest == release.digest:
            lines.append(f"# already serving {release.tag}: nothing to switch")
        else:
            step = plan.switch(app, state, release.tag, image=release, secrets=secrets)
            lines += [str(command) for command in step.commands()]
            lines.append(f"# then wait for health: {_health_text(app.healthcheck)}")
        plans[host.name] = lines
    return plans


def _health_text(check: Any) -> str:
    if check.path is not None:
        return (
            f"GET http://<container address>:{check.port}{check.path} answers 2xx within {check.timeout:g} s"
        )
    return f"Docker HEALTHCHECK healthy, or running for {plan.RUNNING_GRACE:g} s, within {check.timeout:g} s"


def rollback(fleet: Fleet, to: str | None) -> Report:
    """Switch every host back to its previous release (or *to*) from what it kept locally."""
    targets: dict[Host, str] = {}
    problems = []
    for host in fleet.hosts:
        state = fleet.states[host]
        target = to or state.previous()
        if target is None:
            problems.append(f"{host}: no previous release recorded")
        elif state.container(target) is None:
            kept = ", ".join(c.release for c in state.containers) or "none"
            problems.append(f"{host}: release {target} is no longer on this host (kept: {kept})")
        else:
            targets[host] = target
    if problems:
        raise UsageError("nothing to roll back to, so nothing was changed:\n  " + "\n  ".join(problems))
    releases = set(targets.values())
    report = Report("rollback", releases.pop() if len(releases) == 1 else "mixed")

    def plan_for(host: Host) -> plan.Switch | None:
        state = fleet.states[host]
        if state.running is not None and state.running.release == targets[host]:
            return None
        return plan.switch(fleet.app, state, targets[host])

    def digest_of(host: Host) -> str:
        kept = fleet.states[host].container(targets[host])
        return kept.digest if kept else ""

    _switch_in_batches(fleet, report, digest_of, plan_for)
    return report


def _prune(fleet: Fleet, release: str) -> None:
    """Keep `app.keep_releases` stopped releases per host; remove older containers and images."""
    app = fleet.app

    def prune(host: Host) -> None:
        names = {c.name for c in fleet.states[host].containers} | {commands.container_name(app, release)}
        if len(names) <= app.keep_releases + 1:
            return  # what the host had before this run plus the new release: nothing to prune
        state = fleet.read_state(host)
        kept, old = state.retained(app.keep_releases)
        if not old:
            return
        fleet.run(host, commands.remove_containers([c.name for c in old]))
        in_use = {c.digest for c in (*kept, *([state.running] if state.running else []))}
        images = [
            ref
            for c in old
            if c.digest not in in_use
            for ref in (f"{app.image}:{c.release}", f"{app.image}@{c.digest}")
        ]
        if images:
            fleet.run(host, commands.remove_images(images))

    for host, outcome in fleet.each(fleet.hosts, prune).items():
        if not outcome.ok and outcome.error is not None:
            fleet.out.warn(f"{host}: old releases not pruned: {outcome.error.message}")


def status(fleet: Fleet) -> dict[str, Any]:
    """Per plain host: the release it serves, its digest, state, health and start time; and drift."""

    def one(host: Host) -> dict[str, Any]:
        state = fleet.states[host]
        running = state.running
        row: dict[str, Any] = {"host": host.name, "release": None, "digest": None, "state": "no container"}
        row["kept"] = [c.release for c in state.containers if not c.running]
        if running is not None:
            info = plan.parse_inspect(fleet.run(host, commands.inspect(running.name)))
            row.update(release=running.release, digest=running.digest, state=info.status)
            row.update(health=info.health or "-", started=info.started_at, restarts=info.restarts)
            row["uptime"] = plan.uptime(info.started_at, datetime.now(timezone.utc))
        return row

    rows = []
    plain = [host for host in fleet.hosts if host.swarm is None]
    for host, outcome in fleet.each(plain, one).items():
        error = outcome.error
        rows.append(
            outcome.value if error is None else {"host": host.name, "state": "error", "error": error.message}
        )
    serving = {(row.get("release"), row.get("digest")) for row in rows}
    return {"hosts": rows, "drift": len(serving) > 1}


def history(fleet: Fleet) -> dict[str, list[dict[str, Any]]]:
    """Per host, the recorded releases, oldest first."""
    return {host.name: [entry.to_dict() for entry in fleet.states[host].history] for host in fleet.hosts}
