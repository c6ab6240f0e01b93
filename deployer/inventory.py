"""Turn `--hosts` into the hosts to work on, with their SSH settings resolved.

Precedence for each setting: the host's own entry, then the inventory's `ssh` section, then
the OpenSSH client config (`ssh.config_file`), then SSH's defaults.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.config import HostSpec, Inventory
from deployer.errors import ConfigError, UsageError


@dataclass(frozen=True)
class Host:
    """A host to connect to, as resolved from the inventory and ~/.ssh/config."""

    name: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None

    def __str__(self) -> str:
        return self.name


def select(inventory: Inventory, spec: str) -> list[Host]:
    """The hosts named by *spec*: a group, 'all', or comma-separated groups and host names."""
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    if not wanted:
        raise UsageError("--hosts names nothing", hint=_choices(inventory))
    chosen: dict[str, HostSpec] = {}
    for name in wanted:
        members = _members(inventory, name)
        if members is None:
            raise UsageError(
                f"--hosts: {name!r} is neither a group nor a host of the inventory",
                hint=_choices(inventory),
            )
        for member in members:
            chosen.setdefault(member.address, member)
    config = ssh_config(inventory)
    return [resolve(inventory, member, config) for member in chosen.values()]


def _members(inventory: Inventory, name: str) -> list[HostSpec] | None:
    if name == "all":
        return [member for members in inventory.hosts.values() for member in members]
    if name in inventory.hosts:
        return inventory.hosts[name]
    found = [m for members in inventory.hosts.values() for m in members if m.address == name]
    return found[:1] or None


def _choices(inventory: Inventory) -> str:
    return "groups: all, " + ", ".join(inventory.hosts)


def ssh_config(inventory: Inventory) -> Any:
    """The OpenSSH client config named by `ssh.config_file` (empty when the file is absent)."""
    import paramiko

    path = Path(inventory.ssh.config_file).expanduser()
    if not path.exists():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (OSError, paramiko.ConfigParseError) as exc:
        raise ConfigError(f"{path}: cannot read the SSH client config: {exc}") from exc


def resolve(inventory: Inventory, member: HostSpec, ssh_config: Any) -> Host:
    """Merge a host entry with the inventory's ssh section and the SSH client config."""
    found = ssh_config.lookup(member.address)
    ssh = inventory.ssh
    if ssh.identity_file:
        identity = [inventory.local_path(ssh.identity_file)]
    else:
        identity = [Path(path).expanduser() for path in found.get("identityfile", [])]
    try:
        port = int(member.port or ssh.port or found.get("port", 22))
    except ValueError as exc:
        raise ConfigError(f"{member.address}: the SSH config gives a port that is not a number") from exc
    return Host(
        name=member.address,
        hostname=found.get("hostname", member.address),
        port=port,
        user=member.user or ssh.user or found.get("user") or getpass.getuser(),
        identity_files=tuple(str(path) for path in identity),
        proxy_jump=None if found.get("proxyjump", "none") == "none" else found["proxyjump"],
    )


def parse_jump(spec: str) -> HostSpec:
    """A ProxyJump entry, ``[user@]host[:port]``, as a host entry."""
    user, _, rest = spec.rpartition("@")
    address, _, port = rest.partition(":")
    try:
        return HostSpec(address=address, port=int(port) if port else None, user=user or None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"ProxyJump {spec!r} is not [user@]host[:port]") from exc
