"""Plain hosts behind the reverse proxy: boot it, move an app's route, drain a release.

The pure parts (commands, parsing, the configuration change) are in :mod:`deployer.proxy`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from deployer import config, proxy
from deployer.config import Inventory, TLSFiles
from deployer.errors import CommandError, DeployError, UsageError
from deployer.fleet import Fleet
from deployer.inventory import Host
from deployer.proxy import ProxyState

#: attempts at a route change when another change on the host came first
ATTEMPTS = 5
#: seconds the host may take beyond the drain timeout to answer
MARGIN = 30.0


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
        fleet.run(host, proxy.boot(settings))
        found = read(fleet, host)
    proxy.check_hosts(found.config, fleet.app)
    return found


def prepare(fleet: Fleet) -> None:
    """Before anything changes: every host's proxy runs and takes the app's host names."""
    certificate(fleet.inventory)
    outcomes = fleet.each(fleet.hosts, lambda host: boot(fleet, host))
    errors = [outcome.error for outcome in outcomes.values() if outcome.error is not None]
    if errors:
        first = next((e for e in errors if isinstance(e, UsageError)), errors[0])
        reasons = "\n  ".join(error.message for error in errors)
        raise type(first)(reasons, hint=first.hint)


def route(fleet: Fleet, host: Host, container: str | None) -> None:
    """Send the app's traffic on *host* to *container* (None: take the route away), atomically."""
    app = fleet.app
    target = proxy.upstream(app, container) if container is not None else None
    pem = certificate(fleet.inventory)
    for _ in range(ATTEMPTS):
        found = read(fleet, host)
        try:
            changed = proxy.with_route(found.config, app, target, pem)
            status = proxy.parse_write(fleet.run(host, proxy.write(changed, found.etag)))
        except DeployError as exc:
            raise CommandError(f"{host}: {exc.message}", hint=exc.hint) from exc
        if status != proxy.CONFLICT:
            return
    raise CommandError(f"{host}: the proxy's configuration kept changing under deploy; gave up")


def drain(fleet: Fleet, host: Host, container: str) -> None:
    """Wait until no request is in flight to *container*, at most `proxy.drain_timeout`."""
    settings = fleet.app.proxy
    assert settings is not None
    command = proxy.drain(container, settings.app_port, settings.drain_timeout)
    fleet.run(host, command, timeout=settings.drain_timeout + MARGIN)


@dataclass(frozen=True)
class ProxyRow:
    """One host's proxy, as `deploy proxy status` shows it."""

    host: str
    state: str
    image: str
    routes: str
