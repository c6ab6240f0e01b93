"""Pure decisions: batches, the steps that switch one host, and parsing what hosts answer."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from pydantic import SecretStr

from deployer import commands
from deployer.commands import RemoteCommand
from deployer.config import App, Registry
from deployer.releases import HostState

T = TypeVar("T")

#: seconds a release without any health check must keep running to count as started
RUNNING_GRACE = 3.0


@dataclass(frozen=True)
class Release:
    """An image in the registry, pinned by digest."""

    image: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        """What hosts pull: the repository at the exact digest."""
        return f"{self.image}@{self.digest}"


def batches(hosts: Sequence[T], batch_size: int | str) -> list[list[T]]:
    """Split *hosts* into batches of a count, or of a percentage of the hosts (at least one)."""
    if isinstance(batch_size, str):
        size = max(1, math.floor(len(hosts) * int(batch_size.rstrip("%")) / 100))
    else:
        size = batch_size
    return [list(hosts[start : start + size]) for start in range(0, len(hosts), size)]


def pull_steps(
    release: Release, registry: Registry | None, password: SecretStr | None
) -> list[RemoteCommand]:
    """Fetch the release's image onto a host under its readable tag."""
    return [
        commands.pull(
            release.reference,
            f"{release.image}:{release.tag}",
            username=registry.username if registry else None,
            server=registry.server if registry else None,
            password=password,
        )
    ]


@dataclass(frozen=True)
class Switch:
    """The commands that move one host from its running release to a target release."""

    target: str
    prepare: tuple[RemoteCommand, ...]
    stop_old: RemoteCommand | None
    start_new: RemoteCommand
    #: put the host back: stop the target, start the release it ran before
    undo: tuple[RemoteCommand, ...]

    def commands(self) -> list[RemoteCommand]:
        """The happy path, in order, as `--dry-run` shows it."""
        return [*self.prepare, *([self.stop_old] if self.stop_old else []), self.start_new]


def switch(
    app: App,
    state: HostState,
    release: str,
    *,
    image: Release | None = None,
    secrets: Mapping[str, SecretStr] | None = None,
) -> Switch:
    """Plan a switch to *release*: a fresh container from *image*, else the kept container."""
    target = commands.container_name(app, release)
    prepare: list[RemoteCommand] = []
    if image is not None:
        if state.container(release) is not None:
            prepare.append(commands.remove_container(target))
        prepare.append(commands.create_container(app, release, image.reference, image.digest, secrets or {}))
    running = state.running
    stop_old = commands.stop(running.name, app.container.stop_timeout) if running else None
    undo = [commands.stop(target, app.container.stop_timeout)]
    if running:
        undo.append(commands.start(running.name))
    return Switch(target, tuple(prepare), stop_old, commands.start(target), tuple(undo))


@dataclass(frozen=True)
class ContainerInfo:
    """What `docker container inspect` says about a release's container."""

    status: str
    exit_code: int
    restarts: int
    health: str
    addresses: tuple[str, ...]
    started_at: str

    @property
    def crashed(self) -> bool:
        """True once the container stopped or was restarted by its policy."""
        return self.status in ("exited", "dead") or self.restarts > 0


def parse_inspect(output: str) -> ContainerInfo:
    """Parse the output of :func:`deployer.commands.inspect`."""
    status, exit_code, restarts, health, addresses, started = (output.strip().split("|") + [""] * 6)[:6]
    return ContainerInfo(
        status=status,
        exit_code=int(exit_code or 0),
        restarts=int(restarts or 0),
        health=health,
        addresses=tuple(addresses.split()),
        started_at=started,
    )


def uptime(started_at: str, now: datetime) -> str:
    """How long a container has run, as Docker's StartedAt and a clock give it: "2d3h", "5m12s"."""
    try:
        started = datetime.fromisoformat(started_at[:19]).replace(tzinfo=timezone.utc)
    except ValueError:
        return "-"
    seconds = max(0, int((now - started).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def health_url(info: ContainerInfo, port: int, path: str) -> str:
    """Where the host asks for health: the container's own address, so no port needs publishing."""
    address = info.addresses[0] if info.addresses else "127.0.0.1"
    return f"http://{address}:{port}{path}"


@dataclass(frozen=True)
class LockRecord:
    """Who holds a host's deploy lock, since when, for what."""

    token: str
    by: str
    machine: str
    pid: int
    since: str
    command: str

    def to_json(self) -> bytes:
        """The lock file's content."""
        return json.dumps(self.__dict__, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, text: str) -> LockRecord | None:
        """Read a lock file; None when it is not one of ours."""
        try:
            data = json.loads(text)
            return cls(**{key: data[key] for key in cls.__dataclass_fields__})
        except (json.JSONDecodeError, KeyError, TypeError):
            return None
