"""The reverse proxy's verbs (proxy boot, status, upgrade) and setup, which checks hosts and starts it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from deployer.cli.base import (
    AcceptKeysOption,
    BreakLockOption,
    HostsOption,
    Session,
    app,
    connected,
    plain_hosts,
    session_of,
)
from deployer.errors import UsageError

if TYPE_CHECKING:
    from deployer.fleet import Fleet
    from deployer.targets.proxied import ProxyRow


proxy_app = typer.Typer(
    name="proxy",
    help="The reverse proxy on each host that moves traffic to a healthy release (app.proxy).",
    no_args_is_help=True,
)
app.add_typer(proxy_app)


def _proxy_rows(session: Session, rows: list[ProxyRow]) -> None:
    columns = ["host", "proxy", "image", "routes"]
    session.out.table("proxy", columns, [[r.host, r.state, r.image, r.routes] for r in rows])


@proxy_app.command("boot")
def proxy_boot(ctx: typer.Context, hosts: HostsOption, accept_new_host_keys: AcceptKeysOption = False) -> None:
    """Start the proxy on every host where it does not run (a rollout does this too)."""
    from deployer.targets import proxied

    _proxy_table(ctx, hosts, accept_new_host_keys, proxied.boot_all, reads_only=False)


@proxy_app.command("status")
def proxy_status(ctx: typer.Context, hosts: HostsOption, accept_new_host_keys: AcceptKeysOption = False) -> None:
    """Show each host's proxy: running or not, its image, and the routes it holds."""
    from deployer.targets import proxied

    _proxy_table(ctx, hosts, accept_new_host_keys, proxied.status, reads_only=True)


def _proxy_table(
    ctx: typer.Context,
    hosts: str,
    accept_keys: bool,
    work: Callable[[Fleet], list[ProxyRow]],
    *,
    reads_only: bool,
) -> None:
    session = session_of(ctx)
    inventory = session.inventory()
    with connected(session, inventory, plain_hosts(inventory, hosts), accept_keys, None, reads_only=reads_only) as fleet:
        _proxy_rows(session, work(fleet))


@proxy_app.command("upgrade")
def proxy_upgrade(
    ctx: typer.Context,
    hosts: HostsOption,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
) -> None:
    """Recreate each host's proxy on app.proxy.image, one host at a time.

    Routes and certificates are kept. Each host's proxy restarts: for about a second it refuses
    new connections, and the connections open on it (WebSockets too) end.
    """
    from deployer.targets import proxied

    session = session_of(ctx)
    inventory = session.inventory()
    selected = plain_hosts(inventory, hosts)
    with connected(session, inventory, selected, accept_new_host_keys, "proxy upgrade", break_lock) as fleet:
        _proxy_rows(session, proxied.upgrade(fleet))


@app.command()
def setup(ctx: typer.Context, hosts: HostsOption, accept_new_host_keys: AcceptKeysOption = False) -> None:
    """Check every host once (SSH, Docker engine, free disk, proxy ports) and start the proxy.

    Changes nothing else. Exits 2 when a host is not ready, after printing every host's row.
    """
    from deployer.targets import proxied

    session = session_of(ctx)
    inventory = session.inventory()
    with connected(session, inventory, plain_hosts(inventory, hosts), accept_new_host_keys, None) as fleet:
        rows = proxied.setup(fleet)
    columns = ["host", "docker", "free disk", "proxy ports", "proxy", "ready"]
    cells = [[r.host, r.docker, r.free_disk, r.ports, r.proxy, "yes" if r.ok else "NO"] for r in rows]
    session.out.table("setup", columns, cells)
    if not all(row.ok for row in rows):
        raise UsageError("some hosts are not ready; see the warnings above")
