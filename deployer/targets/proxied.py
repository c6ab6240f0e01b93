"""Plain hosts behind the reverse proxy: boot it, move an app's route, drain a release.

The pure parts (commands, parsing, the configuration change) are in :mod:`deployer.proxy`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from deployer import commands, config, proxy
from deployer.config import Inventory, Proxy, TLSFiles
from deployer.errors import CommandError, UsageError
from deployer.fleet import Fleet
from deployer.inventory import Host
from deployer.proxy import ProxyState

#: attempts at a route change when another change on the host came first
ATTEMPTS = 5


def certificate(inventory: Inventory) -> tuple[str, SecretStr] | None:
    """The certificate and key `proxy.tls` names, read from the operator's machine."""
    settings = inventory.app.proxy
    if settings is None or not isinstance(settings.tls, TLSFiles):
        return None

    def read(path: str, what: str) -> str:
        return config.read_text(
            inventory.local_path(path),
            missing=f"app.proxy.tls.{what}: no such file",
            unreadable=f"app.proxy.tls.{what}: cannot read it",
            hint="PEM files, relative to the inventory file",
        )

    return read(settings.tls.cert, "cert"), SecretStr(read(settings.tls.key, "key"))


def read(fleet: Fleet, host: Host) -> ProxyState:
    """What *host* says about its proxy."""
    return proxy.parse_read(fleet.run(host, proxy.read()))


def boot(fleet: Fleet, host: Host) -> ProxyState:
    """Start the proxy on *host* unless it runs; refuse ports another program holds."""
    settings = fleet.app.proxy
    assert settings is not None
    found = read(fleet, host)
    if not found.running:
        held = sorted({settings.http_port, settings.https_port} & found.listening)
        if held:
            raise UsageError(
                f"{host}: port {held[0]} is held by a program that is not deploy's proxy; nothing was changed",
                hint="stop that program (an old release publishing the port?), or set proxy.http_port "
                "and proxy.https_port",
            )
        fleet.out.progress("starting the proxy", host=host.name)
        _start(fleet, host, settings)
        found = read(fleet, host)
    proxy.check_hosts(found.config, fleet.app)
    return found


def _fetch(fleet: Fleet, host: Host, settings: Proxy) -> None:
    """Pull the proxy's image unless the host has it, logged in when it is in the app's registry."""
    registry = fleet.app.registry_settings
    login = fleet.login if registry is not None and settings.image.startswith(f"{registry.server}/") else None
    fleet.run(host, commands.pull(settings.image, settings.image, login=login))


def _start(fleet: Fleet, host: Host, settings: Proxy) -> None:
    _fetch(fleet, host, settings)
    fleet.run(host, proxy.boot(settings))


def prepare(fleet: Fleet, hosts: list[Host] | None = None) -> None:
    """Before anything changes: every host's proxy (of *hosts*, default all) runs and takes the
    app's host names."""
    certificate(fleet.inventory)
    outcomes = fleet.each(fleet.hosts if hosts is None else hosts, lambda host: boot(fleet, host))
    errors = [outcome.error for outcome in outcomes.values() if outcome.error is not None]
    if errors:
        first = next((e for e in errors if isinstance(e, UsageError)), errors[0])
        reasons = "\n  ".join(error.message for error in errors)
        raise type(first)(reasons, hint=first.hint)


def route(fleet: Fleet, host: Host, container: str | None) -> None:
    """Send the app's traffic on *host* to *container* (None: take the route away), atomically.

    Moving traffic renames the app's upstream file; the configuration is written only when the
    route that reads it is missing or out of date (a first rollout, changed `proxy` settings).
    """
    app = fleet.app
    if container is None:
        _configure(fleet, host, present=False)
        fleet.run(host, proxy.unpoint(app))
        return
    answer = fleet.run(host, proxy.point(app, proxy.upstream(app, container)))
    _configure(fleet, host, present=True, found=proxy.parse_config(answer))


def _configure(fleet: Fleet, host: Host, *, present: bool, found: tuple[str, proxy.JSONObject] | None = None) -> None:
    """Make the app's route and TLS settings on *host* what the inventory says, unless they are."""
    pem = certificate(fleet.inventory)
    for _ in range(ATTEMPTS):
        if found is None:
            state = read(fleet, host)
            found = (state.etag, state.config)
        etag, current = found
        changed = proxy.with_route(current, fleet.app, pem, present=present)
        if changed == current:
            return
        status = proxy.parse_write(fleet.run(host, proxy.write(changed, etag)), str(host))
        if status != proxy.CONFLICT:
            return
        found = None
    raise CommandError(f"{host}: the proxy's configuration kept changing under deploy; gave up")


def drain(fleet: Fleet, host: Host, container: str, stop_timeout: int) -> None:
    """Wait until no request is in flight to *container*, at most `proxy.drain_timeout`, then
    stop it: one round trip."""
    settings = fleet.app.proxy
    assert settings is not None
    waiting = proxy.drain(container, settings.app_port, settings.drain_timeout)
    fleet.run(host, commands.chain(waiting, commands.stop(container, stop_timeout)))


@dataclass(frozen=True)
class ProxyRow:
    """One host's proxy, as `deploy proxy status` shows it."""

    host: str
    state: str
    image: str
    routes: str


def status(fleet: Fleet) -> list[ProxyRow]:
    """Each host's proxy: running or not, its image, and every route it holds."""

    def one(host: Host) -> ProxyRow:
        found = read(fleet, host)
        state = "running" if found.running else ("stopped" if found.exists else "absent")
        routes = [
            f"{', '.join(sorted(proxy.hosts_of(route)))} -> {found.sends_to(route)}"
            for _, route in proxy.routes_of(found.config)
        ]
        return ProxyRow(host.name, state, found.image or "-", "; ".join(routes) or "-")

    return [
        outcome.value if outcome.value is not None else ProxyRow(host.name, "error", "-", str(outcome.error))
        for host, outcome in fleet.each(fleet.hosts, one).items()
    ]


def boot_all(fleet: Fleet) -> list[ProxyRow]:
    """Start the proxy on every host where it does not run."""
    _settings(fleet)
    prepare(fleet)
    return status(fleet)


def upgrade(fleet: Fleet) -> list[ProxyRow]:
    """Recreate each host's proxy on `proxy.image`, one host at a time; routes and certificates stay.

    It costs each host a restart of its proxy: about a second in which new connections are
    refused, and the end of the connections open on it (WebSockets included).
    """
    settings = _settings(fleet)
    for host in fleet.hosts:
        found = read(fleet, host)
        if found.running and found.image == settings.image:
            fleet.out.progress(f"the proxy already runs {settings.image}", host=host.name)
            continue
        fleet.out.progress(f"restarting the proxy on {settings.image}", host=host.name)
        _fetch(fleet, host, settings)
        if found.exists:
            fleet.run(host, proxy.remove())
        fleet.run(host, proxy.boot(settings))
    return status(fleet)


def _settings(fleet: Fleet) -> Proxy:
    settings = fleet.app.proxy
    if settings is None:
        raise UsageError("app.proxy is not set in the inventory", hint="see docs/inventory.md, app.proxy")
    return settings


@dataclass(frozen=True)
class SetupRow:
    """One host's preflight, as `deploy setup` shows it."""

    host: str
    docker: str
    free_disk: str
    ports: str
    proxy: str
    ok: bool


#: the Docker engine `deploy` is tested with, oldest first
MINIMUM_DOCKER = (20, 10)
#: free disk below which a host is flagged
MINIMUM_FREE = 2 * 1024**3


def setup(fleet: Fleet) -> list[SetupRow]:
    """Check every host (engine, disk, proxy ports) and start the proxy where all is well."""
    settings = fleet.app.proxy

    def one(host: Host) -> SetupRow:
        facts = commands.parse_host_facts(fleet.run(host, commands.host_facts()))
        found = read(fleet, host)
        problems = []
        version = tuple(int(part) for part in facts.docker.split(".")[:2] if part.isdigit())
        if not facts.docker:
            problems.append("no Docker engine answers")
        elif version < MINIMUM_DOCKER:
            problems.append(f"Docker {facts.docker} is older than {MINIMUM_DOCKER[0]}.{MINIMUM_DOCKER[1]}")
        if facts.free_bytes < MINIMUM_FREE:
            problems.append("less than 2 GiB free for images")
        ports = "-"
        state = "not used"
        if settings is not None:
            wanted = sorted({settings.http_port, settings.https_port})
            held = [port for port in wanted if port in found.listening]
            ports = ", ".join(
                f"{port} {'proxy' if found.running else 'HELD'}" if port in held else f"{port} free"
                for port in wanted
            )
            if held and not found.running:
                problems.append(f"port {held[0]} is held by a program that is not deploy's proxy")
            if not problems:
                boot(fleet, host)
                state = "running"
            else:
                state = "not started"
        for problem in problems:
            fleet.out.warn(f"{host}: {problem}")
        return SetupRow(
            host.name,
            facts.docker or "-",
            f"{facts.free_bytes / 1024**3:.1f} GiB",
            ports,
            state,
            not problems,
        )

    return [
        outcome.value
        if outcome.value is not None
        else SetupRow(host.name, "-", "-", "-", str(outcome.error), False)
        for host, outcome in fleet.each(fleet.hosts, one).items()
    ]
