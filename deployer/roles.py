"""An app's roles: what each runs (command, environment, ports, health check), and where.

`app.roles` in the inventory says it; this module resolves it into :class:`Role`s, each with
its effective container settings merged from `app.container`. An app without `app.roles` is
one role, ``web``, on every host, exactly as it ran before roles existed: same container
names, same history, same health check. Pure functions only: the targets use them to plan
which role runs where and in which container.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deployer.config import DEFAULT_ROLE, App, Cluster, Container, Healthcheck, Inventory
from deployer.errors import UsageError
from deployer.inventory import Host
from deployer.state import HostState


@dataclass(frozen=True)
class Role:
    """One role as it runs: the container settings of `app.container` with the role's merged in."""

    name: str
    container: Container
    #: replaces the image's CMD; None runs the image's own
    cmd: tuple[str, ...] | None
    #: the health gate; None: the container only has to keep running (image HEALTHCHECK off)
    healthcheck: Healthcheck | None
    #: behind `app.proxy`: switched start-first and routed
    proxy: bool
    #: groups and hosts it runs on; None: every host (an app without roles)
    hosts: tuple[str, ...] | None = None

    @property
    def default(self) -> bool:
        """True for the web role, whose containers keep the names of an app without roles."""
        return self.name == DEFAULT_ROLE


def of(app: App) -> list[Role]:
    """The app's roles, in inventory order; an app without `app.roles` is the one role web."""
    if not app.roles:
        return [Role(DEFAULT_ROLE, app.container, None, app.healthcheck, app.proxy is not None)]
    found = []
    for name, spec in app.roles.items():
        proxied = app.role_proxied(name)
        ports = spec.ports if spec.ports is not None else app.container.ports if name == DEFAULT_ROLE else []
        container = app.container.model_copy(update={"env": {**app.container.env, **spec.env}, "ports": ports})
        if spec.healthcheck is not None:
            check: Healthcheck | None = spec.healthcheck
        else:
            check = app.healthcheck if (proxied or name == DEFAULT_ROLE) else None
        cmd = tuple(spec.cmd) if spec.cmd is not None else None
        found.append(Role(name, container, cmd, check, proxied, tuple(spec.hosts)))
    return found


def get(app: App, name: str) -> Role:
    """The role called *name*; the web role of an app without roles."""
    for role in of(app):
        if role.name == name:
            return role
    raise UsageError(f"{app.name} has no role {name!r}", hint=_choices(app))


def select(app: App, spec: str | None) -> frozenset[str] | None:
    """The roles `--roles` names (comma-separated); None when it is not given: every role."""
    if spec is None:
        return None
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    if not wanted:
        raise UsageError("--roles names nothing", hint=_choices(app))
    known = [role.name for role in of(app)]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UsageError(f"--roles: {', '.join(map(repr, unknown))}: no such role of {app.name}", hint=_choices(app))
    return frozenset(wanted)


def _choices(app: App) -> str:
    return "roles: " + ", ".join(role.name for role in of(app))


def members(inventory: Inventory, names: Iterable[str]) -> set[str]:
    """The addresses of the plain hosts that groups or hosts *names* stand for."""
    found: set[str] = set()
    for name in names:
        group = inventory.hosts.get(name)
        if isinstance(group, list):
            found |= {member.address for member in group}
        elif not isinstance(group, Cluster):
            found.add(name)
    return found


def on_host(inventory: Inventory, host: Host, only: frozenset[str] | None = None) -> list[Role]:
    """The roles that run on *host* (among *only*, when given), in inventory order."""
    return [
        role
        for role in of(inventory.app)
        if (only is None or role.name in only)
        and (role.hosts is None or host.name in members(inventory, role.hosts))
    ]


def placement(
    inventory: Inventory, hosts: Sequence[Host], only: frozenset[str] | None = None
) -> dict[Host, list[Role]]:
    """Per selected host, the roles a run works on there; hosts that run none are left out.

    A Swarm cluster's manager is kept as it is: a cluster runs the app as one service.
    """
    placed = {}
    for host in hosts:
        found = on_host(inventory, host, only) if host.swarm is None else list(of(inventory.app))
        if found:
            placed[host] = found
    return placed


def narrow(inventory: Inventory, hosts: list[Host], only: frozenset[str] | None) -> list[Host]:
    """The selected hosts where at least one role of the run runs; UsageError when none is left."""
    if not inventory.app.roles or any(host.swarm is not None for host in hosts):
        return hosts
    kept = list(placement(inventory, hosts, only))
    if not kept:
        wanted = ", ".join(sorted(only)) if only is not None else "the app's roles"
        raise UsageError(
            f"no host selected by --hosts runs {wanted}; nothing was changed",
            hint="app.roles.<role>.hosts says where each role runs",
        )
    return kept


def running(state: HostState, names: Iterable[str] | None = None) -> dict[str, str]:
    """Role → the name of its running container on a host (of roles *names*, when given).

    What to read logs from or exec into: the containers each role serves with now.
    """
    wanted = None if names is None else set(names)
    found: dict[str, str] = {}
    for container in state.containers:
        if container.running and (wanted is None or container.role in wanted):
            found.setdefault(container.role, container.name)
    return found


def releases(states: Mapping[str, str | None]) -> str | None:
    """What a host serves, in words, from each role's release: one release, or each role's."""
    distinct = set(states.values())
    if len(distinct) <= 1:
        return next(iter(distinct), None)
    return ", ".join(f"{role} {release or 'nothing'}" for role, release in states.items())
