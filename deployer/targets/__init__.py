"""Where a release runs: plain hosts, or a Swarm cluster. The CLI picks one target per verb.

Both work over a :class:`~deployer.fleet.Fleet` (connections, lock, state, history) and share
this small interface; a new verb is one more method on :class:`Target` and on each target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pydantic import SecretStr

from deployer.errors import ConnectError
from deployer.fleet import Fleet
from deployer.inventory import Host, one_kind
from deployer.plan import Release
from deployer.report import Report, Status, StatusRow


class Target(Protocol):
    """What a kind of host does for each verb."""

    def rollout(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> Report:
        """Put *release* on every host of the fleet, or leave it as it was."""
        ...

    def rollout_plan(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> dict[str, list[str]]:
        """What `rollout` would run, per host, changing nothing."""
        ...

    def rollback(self, fleet: Fleet, to: str | None) -> Report:
        """Put every host back on its previous release (or *to*)."""
        ...

    def status(self, fleet: Fleet, hosts: list[Host]) -> list[StatusRow]:
        """A status row per host (or per task) of *hosts*."""
        ...


def _target(swarm: bool) -> Target:
    if swarm:
        from deployer.targets.swarm import SwarmCluster

        return SwarmCluster()
    from deployer.targets.plain import PlainHosts

    return PlainHosts()


def pick(hosts: list[Host]) -> Target:
    """The target of a run that changes *hosts*: one kind only (a mix is refused)."""
    one_kind(hosts)
    return _target(any(host.swarm is not None for host in hosts))


def status(fleet: Fleet) -> Status:
    """Every host's and every task's row, plain hosts first, merged into one status."""
    rows = [
        StatusRow(host.name, state="unreachable" if isinstance(error, ConnectError) else "error", error=error.message)
        for host, error in fleet.unreachable.items()
    ]
    for swarm in (False, True):
        hosts = [host for host in fleet.hosts if (host.swarm is not None) == swarm]
        if hosts:
            rows += _target(swarm).status(fleet, hosts)
    return Status(rows)
