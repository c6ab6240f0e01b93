"""Turn `--hosts` into the hosts to work on, with their SSH settings resolved.

Precedence for each setting: the host's own entry, then the inventory's `ssh` section, then
the OpenSSH client config (`ssh.config_file`, read by :mod:`deployer.transport`), then SSH's
defaults.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from deployer.config import Cluster, HostSpec, Inventory, Swarm
from deployer.errors import ConfigError, UsageError


@dataclass(frozen=True)
class Host:
    """A host to connect to, as resolved from the inventory and ~/.ssh/config.

    For a Swarm cluster it is the cluster's manager, named after the group, with ``swarm`` set.
    """

    name: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    swarm: Swarm | None = None

    def __str__(self) -> str:
        return self.name


def select(inventory: Inventory, spec: str, ssh_config: SSHLookup) -> list[Host]:
    """The hosts named by *spec*: a group, 'all', or comma-separated groups and host names, with
    their SSH settings filled in from *ssh_config* where the inventory leaves them unset."""
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    if not wanted:
        raise UsageError("--hosts names nothing", hint=_choices(inventory))
    chosen: dict[str, HostSpec] = {}
    clusters: dict[str, Cluster] = {}
    for name in wanted:
        groups = list(inventory.hosts) if name == "all" else [name]
        members = _members(inventory, name)
        if members is None:
            raise UsageError(
                f"--hosts: {name!r} is neither a group nor a host of the inventory",
                hint=_choices(inventory),
            )
        for member in members:
            chosen.setdefault(member.address, member)
        clusters.update(_clusters(inventory, groups))
    return [resolve(inventory, member, ssh_config) for member in chosen.values()] + [
        replace(resolve(inventory, cluster.swarm.manager, ssh_config), name=group, swarm=cluster.swarm)
        for group, cluster in clusters.items()
    ]


def _members(inventory: Inventory, name: str) -> list[HostSpec] | None:
    """The plain hosts *name* selects (possibly none), or None when it names nothing."""
    groups = {group: members for group, members in inventory.hosts.items() if isinstance(members, list)}
    if name == "all":
        return [member for members in groups.values() for member in members]
    if name in inventory.hosts:
        return groups.get(name, [])
    found = [m for members in groups.values() for m in members if m.address == name]
    return found[:1] or None


def _clusters(inventory: Inventory, groups: list[str]) -> dict[str, Cluster]:
    return {group: cluster for group in groups if isinstance(cluster := inventory.hosts.get(group), Cluster)}


def one_kind(hosts: list[Host]) -> None:
    """Refuse a selection to change that mixes plain hosts and Swarm clusters, or names two clusters."""
    clusters = [host.name for host in hosts if host.swarm is not None]
    plain = [host.name for host in hosts if host.swarm is None]
    if clusters and plain:
        raise UsageError(
            f"--hosts selects plain hosts ({', '.join(plain)}) and Swarm clusters ({', '.join(clusters)}); "
            "a rollout or rollback changes one kind at a time, so nothing was changed",
            hint="run once for the plain hosts' groups, then once per cluster: --hosts GROUP",
        )
    if len(clusters) > 1:
        raise UsageError(
            f"--hosts selects {len(clusters)} Swarm clusters ({', '.join(clusters)}); "
            "a rollout or rollback changes one cluster at a time, so nothing was changed",
            hint="run once per cluster: --hosts GROUP",
        )


def _choices(inventory: Inventory) -> str:
    return "groups: all, " + ", ".join(inventory.hosts)


@dataclass(frozen=True)
class SSHConfigEntry:
    """What the OpenSSH client config says about one host name; None where it says nothing."""

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None


#: looks a host name up in the OpenSSH client config (see ``deployer.transport.ssh_config``)
SSHLookup = Callable[[str], SSHConfigEntry]


def no_ssh_config(name: str) -> SSHConfigEntry:
    """The lookup of an empty OpenSSH client config."""
    return SSHConfigEntry()


def resolve(inventory: Inventory, member: HostSpec, ssh_config: SSHLookup) -> Host:
    """Merge a host entry with the inventory's ssh section and the SSH client config."""
    found = ssh_config(member.address)
    ssh = inventory.ssh
    if ssh.identity_file:
        identity = [inventory.local_path(ssh.identity_file)]
    else:
        identity = [Path(path).expanduser() for path in found.identity_files]
    return Host(
        name=member.address,
        hostname=found.hostname or member.address,
        port=member.port or ssh.port or found.port or 22,
        user=member.user or ssh.user or found.user or getpass.getuser(),
        identity_files=tuple(str(path) for path in identity),
        proxy_jump=found.proxy_jump,
    )


def parse_jump(spec: str) -> HostSpec:
    """A ProxyJump entry, ``[user@]host[:port]`` or ``ssh://[user@]host[:port]``, as a host entry."""
    user, _, rest = spec.strip().removeprefix("ssh://").rpartition("@")
    if rest.startswith("["):  # [IPv6 address]:port
        address, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        address, _, port = rest.partition(":")
    try:
        if not address:
            raise ValueError("no host")
        return HostSpec(address=address, port=int(port) if port else None, user=user or None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"ProxyJump {spec!r} is not [user@]host[:port]") from exc
