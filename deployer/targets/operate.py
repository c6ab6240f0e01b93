"""Day-two work: one-off containers of a release (`deploy run`, the ``before_switch`` hook),
the running containers' logs (`deploy logs`), and commands in them (`deploy exec`).

Output streams through :meth:`~deployer.transport.Transport.stream` as it comes. A one-off
container carries a name chosen here, so that a run stopped by Ctrl-C or its deadline removes
it (``docker run --rm`` removes it when it ends by itself). Logs that follow run on a terminal
of the host, which hangs them up when deploy leaves.
"""

from __future__ import annotations

import codecs
import re
import secrets as token_source
import shlex
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from pydantic import SecretStr

from deployer import commands, plan, proxy, roles
from deployer.commands import RemoteCommand
from deployer.errors import CommandError, ConnectError, DeployError, Interrupted, RolloutError, UsageError
from deployer.fleet import Fleet
from deployer.inventory import Host
from deployer.plan import Release
from deployer.report import HostReport, Report
from deployer.targets import swarm_service
from deployer.transport import LineSplitter

#: lines of a failed hook's output repeated in the error message
SHOWN_LINES = 20
#: what `--since` takes: a duration (10m, 1h30m), a date or time (RFC 3339), or a Unix time
_SINCE = re.compile(
    r"^(?:(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+|\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?|\d+(?:\.\d+)?)$"
)


def serving_containers(fleet: Fleet, host: Host) -> list[tuple[str, str]]:
    """What `logs` and `exec` work on: each running container of the run's roles on *host*, as
    (its label in output: the host, and the role when the app has roles; its name)."""
    running = roles.running(fleet.states[host], fleet.roles)
    if not fleet.app.roles:
        return [(host.name, name) for name in running.values()][:1]
    return [(f"{host.name}/{role}", name) for role, name in sorted(running.items())]


def since(value: str | None) -> str | None:
    """A `--since` value Docker understands; UsageError otherwise."""
    if value is not None and not _SINCE.fullmatch(value):
        raise UsageError(
            f"--since {value!r} is neither a duration nor a time",
            hint="a duration like 10m or 1h30m, a time like 2026-01-31T08:00:00Z, or a Unix time",
        )
    return value


# ---------------------------------------------------------------- one-off containers


#: seconds `deploy run`, `deploy exec` (without -it) and `deploy logs` (without -f) may take
#: unless --timeout says otherwise
DEFAULT_TIMEOUT = 3600.0


def one_off(
    fleet: Fleet,
    host: Host,
    reference: str,
    command: Sequence[str],
    secrets: Mapping[str, SecretStr],
    sink: Callable[[bytes, bool], None],
    *,
    timeout: float | None = None,
) -> int:
    """Run *command* once in a new container of *reference* on *host*; return its exit status.

    Stopped (Ctrl-C, or past *timeout*), the container is removed at once.
    """
    app = fleet.app
    name = commands.one_off_name(app, token_source.token_hex(4))
    network = proxy.NETWORK if app.proxy is not None else None
    run = commands.one_off(app, name, reference, command, secrets, network=network)
    fleet.out.detail(f"$ {run}", host=host.name)
    try:
        return fleet.transports[host].stream(run, sink, cancel=fleet.cancel, timeout=timeout)
    except ConnectError:
        raise
    except BaseException:
        try:
            fleet.run(host, commands.kill_container(name))
        except DeployError as exc:
            fleet.out.warn(f"{host}: could not remove the one-off container {name}: {exc.message}")
        raise


class _Lines:
    """Output split into lines per stream, each handed to *show* and the last ones kept."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self.show = show
        self.last: deque[str] = deque(maxlen=SHOWN_LINES)
        self._split = {False: LineSplitter(), True: LineSplitter()}

    def sink(self, data: bytes, stderr: bool) -> None:
        for line in self._split[stderr].feed(data):
            self._one(line)

    def flush(self) -> None:
        for splitter in self._split.values():
            for line in splitter.flush():
                self._one(line)

    def _one(self, line: str) -> None:
        self.last.append(line)
        self.show(line)


def before_switch(fleet: Fleet, release: Release, secrets: Mapping[str, SecretStr]) -> None:
    """Run the app's ``before_switch`` commands once, in order, in one-off containers of *release*
    on the fleet's first host; stop the rollout (nothing switched) at the first that fails."""
    hooks = fleet.app.hooks
    if not hooks.before_switch:
        return
    host = fleet.hosts[0]
    previous = fleet.states[host].current
    for command in hooks.before_switch:
        argv = commands.hook_argv(command)
        shown = shlex.join(argv)
        fleet.out.progress(f"before_switch: {shown}", host=host.name)
        lines = _Lines(lambda line: fleet.out.progress(f"  {line}", host=host.name))

        def record(result: str, shown: str = shown) -> None:
            fleet.record(host, "before_switch", release.tag, release.digest, result, previous, command=shown)

        try:
            status = one_off(
                fleet, host, release.reference, argv, secrets, lines.sink, timeout=hooks.before_switch_timeout
            )
        except Interrupted:
            record("interrupted")
            raise Interrupted(
                f"rollout interrupted during the before_switch command {shown}; nothing was switched",
                report=_unswitched(fleet, host, "interrupted"),
            ) from None
        except CommandError as exc:
            record("timeout")
            raise RolloutError(
                f"before_switch: {exc.message}; nothing was switched", report=_unswitched(fleet, host, "timed out")
            ) from exc
        lines.flush()
        record(f"exit {status}")
        if status != 0:
            output = "".join(f"\n  | {line}" for line in lines.last) or "\n  (no output)"
            raise RolloutError(
                f"before_switch: {shown} exited {status} on {host}; nothing was switched{output}",
                report=_unswitched(fleet, host, f"before_switch exited {status}"),
            )


def _unswitched(fleet: Fleet, where: Host, detail: str) -> Report:
    """The report of a rollout stopped before any switch: the hook's host failed, the rest untouched."""
    return Report(
        "rollout",
        None,
        [
            HostReport(
                host.name,
                "failed" if host == where else "untouched",
                fleet.states[host].current,
                detail if host == where else "",
            )
            for host in fleet.hosts
        ],
    )


def run(
    fleet: Fleet,
    host: Host,
    command: Sequence[str],
    secrets: Mapping[str, SecretStr],
    *,
    release: Release | None,
    password: SecretStr | None,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """`deploy run`: *command* in a one-off container of *release* (pulled first), else of the
    release *host* serves, its output streamed as it comes; return its exit status. Past
    *timeout* seconds it is stopped and its container removed (CommandError)."""
    app = fleet.app
    state = fleet.states[host]
    if release is None:
        running = state.running
        if running is None:
            raise UsageError(
                f"{host}: no release of {app.name} runs here, so there is none to run; nothing was run",
                hint="pass --tag TAG to run a release from the registry",
            )
        release = Release(app.image, running.release, running.digest)
    else:
        for pull in plan.pull_steps(release, app.registry_settings, password, state):
            fleet.run(host, pull)
    shown = shlex.join(command)
    fleet.out.progress(f"running {shown} in a one-off container of {release.tag}", host=host.name)
    out = _Raw(fleet.out.stdout, fleet.out.stderr)
    try:
        status = one_off(fleet, host, release.reference, command, secrets, out.sink, timeout=timeout)
    except Interrupted:
        fleet.record(host, "run", release.tag, release.digest, "interrupted", None, command=shown)
        raise Interrupted(f"{host}: run interrupted; its container was stopped and removed") from None
    except CommandError as exc:
        fleet.record(host, "run", release.tag, release.digest, "timeout", None, command=shown)
        raise CommandError(f"{exc.message}; its container was removed", hint="give it longer with --timeout") from exc
    out.flush()
    fleet.record(host, "run", release.tag, release.digest, f"exit {status}", None, command=shown)
    return status


class _Raw:
    """Output passed through as it comes: stdout to stdout, stderr to stderr, whole characters."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._to = {False: stdout, True: stderr}
        self._decode = {err: codecs.getincrementaldecoder("utf-8")(errors="replace") for err in (False, True)}

    def sink(self, data: bytes, stderr: bool) -> None:
        stream = self._to[stderr]
        stream.write(self._decode[stderr].decode(data))
        stream.flush()

    def flush(self) -> None:
        for err, decoder in self._decode.items():
            self._to[err].write(decoder.decode(b"", final=True))
            self._to[err].flush()


# ---------------------------------------------------------------- logs and exec


@dataclass(frozen=True)
class _Job:
    """One stream to read: a command on a host, its lines prefixed with *label*."""

    host: Host
    label: str
    command: RemoteCommand


class _Prefixed:
    """Lines of several streams, each prefixed with its label, merged on one output as they come."""

    def __init__(self, out: TextIO, labels: Sequence[str]) -> None:
        self._out = out
        self._width = max((len(label) for label in labels), default=0)
        self._lock = threading.Lock()

    def lines(self, label: str) -> _Lines:
        return _Lines(lambda line: self._write(label, line))

    def _write(self, label: str, line: str) -> None:
        with self._lock:
            self._out.write(f"{label:<{self._width}} | {line}\n")
            self._out.flush()


def _stream_all(
    fleet: Fleet, jobs: Sequence[_Job], *, terminal: bool, timeout: float | None
) -> dict[_Job, int | DeployError]:
    """Read every job's stream at once (one thread each), until all have ended, Ctrl-C, or
    *timeout* seconds (a job still running then ends with CommandError)."""
    merged = _Prefixed(fleet.out.stdout, [job.label for job in jobs])
    results: dict[_Job, int | DeployError] = {}

    def read(job: _Job) -> None:
        lines = merged.lines(job.label)
        fleet.out.detail(f"$ {job.command}", host=job.host.name)
        try:
            results[job] = fleet.transports[job.host].stream(
                job.command, lines.sink, cancel=fleet.cancel, terminal=terminal, timeout=timeout
            )
        except DeployError as exc:
            results[job] = exc
        finally:
            lines.flush()

    threads = [threading.Thread(target=read, args=(job,), daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # short joins: the main thread stays free for the signal handler
            thread.join(0.2)
    return results


def logs(fleet: Fleet, *, follow: bool, tail: int | None, since: str | None) -> None:
    """`deploy logs`: every running container's (every Swarm service's) lines, prefixed with the
    host, merged as they come; with *follow*, until Ctrl-C (then Interrupted)."""
    jobs: list[_Job] = []
    for host in fleet.hosts:
        if host.swarm is not None:
            command = swarm_service.service_logs(fleet.app, follow=follow, tail=tail, since=since)
            jobs.append(_Job(host, host.name, command))
            continue
        found = serving_containers(fleet, host)
        if not found:
            fleet.out.warn(f"{host}: no container of {fleet.app.name} runs here")
        jobs += [
            _Job(host, label, commands.follow_logs(name, follow=follow, tail=tail, since=since))
            for label, name in found
        ]
    _show_logs(fleet, jobs, follow)


def container_logs(fleet: Fleet, container: str, *, follow: bool, tail: int | None) -> None:
    """The lines of the container named *container* on every host of the fleet, prefixed with
    the host, merged as they come; with *follow*, until Ctrl-C (then Interrupted)."""
    command = commands.follow_logs(container, follow=follow, tail=tail, since=None)
    _show_logs(fleet, [_Job(host, host.name, command) for host in fleet.hosts], follow)


def _show_logs(fleet: Fleet, jobs: list[_Job], follow: bool) -> None:
    results = _stream_all(fleet, jobs, terminal=follow, timeout=None if follow else DEFAULT_TIMEOUT)
    if fleet.cancel.is_set():
        raise Interrupted("logs stopped")
    _raise_first(results)


def exec_all(fleet: Fleet, command: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> int:
    """`deploy exec`: *command* in the running container of every host at once, each line prefixed
    with its host (one host: its output as it comes); return the worst exit status."""
    targets = _containers(fleet)
    if len(targets) == 1:
        ((host, _, name),) = targets
        out = _Raw(fleet.out.stdout, fleet.out.stderr)
        status = fleet.transports[host].stream(
            commands.exec_in(name, command), out.sink, cancel=fleet.cancel, timeout=timeout
        )
        out.flush()
        return status
    jobs = [_Job(host, label, commands.exec_in(name, command)) for host, label, name in targets]
    results = _stream_all(fleet, jobs, terminal=False, timeout=timeout)
    if fleet.cancel.is_set():
        raise Interrupted("exec stopped")
    worst = 0
    for job, result in results.items():
        if isinstance(result, DeployError):
            fleet.out.warn(result.message)
            result = result.exit_code
        elif result != 0:
            fleet.out.progress(f"exit status {result}", host=job.host.name)
        worst = max(worst, result)
    return worst


def exec_terminal(fleet: Fleet, command: Sequence[str], *, stdin_fd: int, stdout_fd: int,
                  size: Callable[[], tuple[int, int]], term: str) -> int:
    """`deploy exec -it`: *command* in the running container of the fleet's one host, on a
    terminal wired to the local one; return its exit status."""
    targets = _containers(fleet)
    if len(targets) != 1:
        raise UsageError(
            f"exec -it opens one terminal, and {', '.join(label for _, label, _ in targets)} each run a container",
            hint="pick one role with --roles",
        )
    ((host, _, name),) = targets
    run = commands.exec_in(name, command, terminal=True)
    fleet.out.detail(f"$ {run}", host=host.name)
    return fleet.transports[host].interactive(run, stdin_fd=stdin_fd, stdout_fd=stdout_fd, size=size, term=term)


def _containers(fleet: Fleet) -> list[tuple[Host, str, str]]:
    """The running containers of each host (host, label, name); UsageError, before anything
    runs, when a host has none."""
    found = {host: serving_containers(fleet, host) for host in fleet.hosts}
    missing = [host.name for host, names in found.items() if not names]
    if missing:
        raise UsageError(
            f"no container of {fleet.app.name} runs on {', '.join(missing)}; nothing was run",
            hint="deploy status shows what each host runs; deploy run starts a one-off container",
        )
    return [(host, label, name) for host, names in found.items() for label, name in names]


def _raise_first(results: Mapping[_Job, int | DeployError]) -> None:
    errors = [result for result in results.values() if isinstance(result, DeployError)]
    if errors:
        reasons = "\n  ".join(error.message for error in errors)
        raise type(errors[0])(f"{len(errors)} stream(s) failed:\n  {reasons}", hint=errors[0].hint)
