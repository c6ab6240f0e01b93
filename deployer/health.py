"""Wait for a container on a host to pass the app's health check, with a deadline."""

from __future__ import annotations

import time

from deployer import commands, roles
from deployer.commands import ContainerInfo
from deployer.config import DEFAULT_ROLE, Healthcheck
from deployer.errors import CommandError, DeployError, Interrupted
from deployer.fleet import Fleet
from deployer.inventory import Host

#: seconds a release without any health check must keep running to count as started
RUNNING_GRACE = 3.0


def wait(
    fleet: Fleet,
    host: Host,
    name: str,
    *,
    role: str = DEFAULT_ROLE,
    first: ContainerInfo | None = None,
    interruptible: bool = True,
) -> None:
    """Wait until container *name* of *role* on *host* passes the role's health check (see
    :func:`wait_for`)."""
    wait_for(fleet, host, name, roles.get(fleet.app, role).healthcheck, first=first, interruptible=interruptible)


def wait_for(
    fleet: Fleet,
    host: Host,
    name: str,
    gate: Healthcheck | None,
    *,
    first: ContainerInfo | None = None,
    interruptible: bool = True,
) -> None:
    """Wait until container *name* on *host* passes *gate*, then watch it; raise CommandError if
    not. Without a gate, the container only has to keep running (not exit, not restart) for
    RUNNING_GRACE seconds. *first* is the container's state read just now, if the caller has it.

    A wait that puts a host back is not *interruptible*: a Ctrl-C must not leave it half done.
    """
    check = gate if gate is not None else Healthcheck()
    started = time.monotonic()
    deadline = started + check.timeout
    last = "no answer yet"
    while True:
        if interruptible and fleet.cancel.is_set():
            raise Interrupted(f"{host}: interrupted while waiting for health")
        info = first if first is not None else commands.parse_inspect(fleet.run(host, commands.inspect(name)))
        first = None
        if info.crashed or (gate is None and info.status == "restarting"):
            raise _unhealthy(fleet, host, name, f"the container exited with code {info.exit_code}", info)
        if check.path is not None and check.port is not None:
            url = commands.health_url(info, check.port, check.path)
            code = fleet.run(host, commands.http_probe(url, min(2.0, check.timeout))).strip() or "000"
            if code.startswith("2"):
                break
            last = f"GET {url} " + ("got no answer" if code == "000" else f"answered {code}")
        elif info.health and gate is not None:
            if info.health == "healthy":
                break
            last = f"Docker HEALTHCHECK says {info.health}"
        elif time.monotonic() - started >= RUNNING_GRACE:
            break
        else:
            last = "waiting for the container to keep running"
        if time.monotonic() >= deadline:
            raise _unhealthy(fleet, host, name, f"not healthy within {check.timeout:g} s: {last}", info)
        time.sleep(check.interval)
    watch_until = time.monotonic() + check.watch
    while time.monotonic() < watch_until:
        time.sleep(min(check.interval, max(0.0, watch_until - time.monotonic())))
        info = commands.parse_inspect(fleet.run(host, commands.inspect(name)))
        if info.crashed or info.health == "unhealthy":
            raise _unhealthy(fleet, host, name, f"crashed within the {check.watch:g} s watch window", info)


def describe(check: Healthcheck | None) -> str:
    """The health check in words, as `--dry-run` shows it (None: the keeps-running gate)."""
    if check is None:
        return f"running, without a restart, for {RUNNING_GRACE:g} s"
    if check.path is not None:
        return (
            f"GET http://<container address>:{check.port}{check.path} answers 2xx within {check.timeout:g} s"
        )
    return f"Docker HEALTHCHECK healthy, or running for {RUNNING_GRACE:g} s, within {check.timeout:g} s"


def _unhealthy(fleet: Fleet, host: Host, name: str, reason: str, info: ContainerInfo) -> CommandError:
    try:
        result = fleet.transports[host].run(commands.logs(name))
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
    except DeployError:
        tail = []
    logs = ("; last log lines: " + " | ".join(tail)) if tail else ""
    restarts = f" after {info.restarts} restart(s)" if info.restarts else ""
    return CommandError(f"{name} {reason}{restarts}{logs}")
