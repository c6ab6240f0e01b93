"""Pure decisions: the release to ship, batches, and how a host fetches the release."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from pydantic import SecretStr

from deployer import commands
from deployer.commands import RemoteCommand
from deployer.config import Registry
from deployer.state import HostState

T = TypeVar("T")


#: how a dry run names the port a host is given for this machine's registry
FORWARDED_PLACEHOLDER = "127.0.0.1:PORT"


@dataclass(frozen=True)
class Release:
    """An image in the registry, pinned by digest."""

    image: str
    tag: str
    digest: str
    #: the port of this machine's loopback registry that serves the image (`app.registry: false`)
    served_by: int | None = None

    @property
    def reference(self) -> str:
        """What containers are made from: the repository at the exact digest. A release served
        from this machine is pulled under a name carrying a port, then given its tag, which names
        that digest: the host keeps no digest reference for it."""
        if self.served_by is not None:
            return f"{self.image}:{self.tag}"
        return f"{self.image}@{self.digest}"


def batches(hosts: Sequence[T], batch_size: int | str) -> list[list[T]]:
    """Split *hosts* into batches of a count, or of a percentage of the hosts (at least one)."""
    if isinstance(batch_size, str):
        size = max(1, math.floor(len(hosts) * int(batch_size.rstrip("%")) / 100))
    else:
        size = batch_size
    return [list(hosts[start : start + size]) for start in range(0, len(hosts), size)]


def pull_steps(
    release: Release,
    registry: Registry | None,
    password: SecretStr | None,
    host: HostState,
    forwarded: str = FORWARDED_PLACEHOLDER,
) -> list[RemoteCommand]:
    """Fetch the release's image onto a host under its readable tag: from the registry, or from
    this machine's registry at *forwarded* on the host's loopback when it serves the release.

    What the *host* runs says whether it has the image: a container made from it. It then only
    tags it; a release served from this machine, known on the host by its tag only, is left as
    it is when a container of that very release is kept."""
    tagged = f"{release.image}:{release.tag}"
    if release.served_by is not None:
        kept = host.container(release.tag)
        held = kept is not None and kept.digest == release.digest
        return [] if held else [commands.pull_forwarded(forwarded, release.image, release.digest, tagged)]
    if host.holds(release.digest):
        return [commands.tag(release.reference, tagged)]
    login = commands.login_for(registry, password)
    return [commands.pull(release.reference, tagged, login=login, unless_present=False)]


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
