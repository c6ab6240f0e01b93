"""What every verb shares: the typer app, the global options, host selection, and the session
with the hosts (connect, lock, Ctrl-C).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from deployer.errors import EXIT_CODES, UsageError
from deployer.output import Output

if TYPE_CHECKING:
    from deployer.accessories import Row as AccessoryRow
    from deployer.commands import Login
    from deployer.config import Inventory
    from deployer.fleet import Fleet
    from deployer.inventory import Host


app = typer.Typer(
    name="deploy",
    help="Ship one immutable image per git commit to a fleet of servers over SSH.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    epilog="Exit codes: " + ", ".join(f"{code} {meaning}" for meaning, code in EXIT_CODES.items()),
)


@dataclass
class Session:
    """What the global options chose, shared by every command."""

    inventory_flag: str | None
    out: Output

    def inventory(self) -> Inventory:
        """Load and validate the inventory the options point at."""
        from deployer import config

        return config.load(config.resolve_path(self.inventory_flag))


InventoryOption = Annotated[
    str | None,
    typer.Option(
        "--inventory",
        "-i",
        metavar="PATH",
        help="Inventory file. (default: $DEPLOY_INVENTORY, else ./inventory.yaml)",
    ),
]
HostsOption = Annotated[
    str,
    typer.Option(
        "--hosts",
        "-H",
        metavar="HOSTS",
        help="A group, 'all', or a comma-separated list of groups and hosts.",
    ),
]
TagOption = Annotated[
    str | None,
    typer.Option("--tag", "-t", metavar="TAG", help="Release tag. (default: the tag of the HEAD commit)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
RolesOption = Annotated[
    str | None,
    typer.Option(
        "--roles",
        metavar="ROLES",
        help="Only these roles of app.roles, comma-separated. (default: every role)",
    ),
]


AcceptKeysOption = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-keys",
        help="Trust and record host keys never seen before (changed keys stay refused).",
    ),
]
BreakLockOption = Annotated[
    bool, typer.Option("--break-lock", help="Take the deploy lock even if a run that died still holds it.")
]


def session_of(ctx: typer.Context) -> Session:
    session = ctx.obj
    assert isinstance(session, Session)
    return session


@app.callback()
def _global(
    ctx: typer.Context,
    inventory: InventoryOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine and command detail.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Show only errors and results: no progress, no live view.")
    ] = False,
) -> None:
    """Build, push, roll out and roll back one image per commit."""
    ctx.obj = Session(inventory_flag=inventory, out=Output(verbosity=-1 if quiet else int(verbose)))


def select_hosts(inventory: Inventory, hosts: str) -> list[Host]:
    """The hosts *hosts* names: checked before anything else is asked of the registry or a host."""
    from deployer import inventory as hosts_module
    from deployer import transport

    return hosts_module.select(inventory, hosts, transport.ssh_config(inventory))


def select_roles(inventory: Inventory, hosts: str, roles: str | None) -> tuple[list[Host], frozenset[str] | None]:
    """The hosts *hosts* names where a role of the run runs, and the roles `--roles` names."""
    from deployer import roles as roles_module

    only = roles_module.select(inventory.app, roles)
    return roles_module.narrow(inventory, select_hosts(inventory, hosts), only), only


def plain_hosts(
    inventory: Inventory,
    hosts: str,
    *,
    lead: str = "",
    why: str = "Swarm publishes ports itself, deploy runs no proxy there",
    hint: str = "select plain hosts' groups",
) -> list[Host]:
    """The selected plain hosts; a Swarm cluster among them is refused, saying *why* (by default:
    it has no proxy of deploy's)."""
    selected = select_hosts(inventory, hosts)
    clusters = [host.name for host in selected if host.swarm is not None]
    if clusters:
        raise UsageError(f"{lead}--hosts selects Swarm clusters ({', '.join(clusters)}): {why}", hint=hint)
    return selected


_PUTTING_BACK = "stopping: putting switched hosts back and releasing the lock (press Ctrl-C again to abandon)"


@contextmanager
def connected(
    session: Session,
    inventory: Inventory,
    selected: list[Host],
    accept_keys: bool,
    lock_for: str | None,
    break_lock: bool = False,
    partial: bool = False,
    reads_only: bool = False,
    roles: frozenset[str] | None = None,
    stopping: str | None = _PUTTING_BACK,
) -> Iterator[Fleet]:
    """Connect to each selected host, take the lock if asked, and stop cleanly on Ctrl-C
    (saying *stopping*, when given).

    A run that only reads (*reads_only*) starts no proxy, so it needs no registry login; it may
    also go on without the hosts it cannot reach (*partial*)."""
    from deployer import fleet as fleet_module
    from deployer import transport

    cancel = threading.Event()
    connect = transport.connector(
        inventory, accept_new_host_keys=accept_keys, on_new_key=session.out.warn, cancel=cancel
    )
    with (
        _cancel_on_signals(cancel, session.out, stopping),
        fleet_module.open_fleet(
            inventory,
            selected,
            connect=connect,
            out=session.out,
            cancel=cancel,
            lock_for=lock_for,
            break_lock=break_lock,
            partial=partial,
            login=None if reads_only or partial else _proxy_login(inventory),
            roles=roles,
        ) as fleet,
    ):
        yield fleet


def _proxy_login(inventory: Inventory) -> Login | None:
    """The registry login hosts need to pull the proxy's image, when it is in the app's registry."""
    from deployer import commands, config

    app = inventory.app
    registry = app.registry_settings
    if app.proxy is None or registry is None or not app.proxy.image.startswith(f"{registry.server}/"):
        return None
    return commands.login_for(registry, config.registry_password(inventory))


@contextmanager
def _cancel_on_signals(cancel: threading.Event, out: Output, stopping: str | None = _PUTTING_BACK) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: finish cleanly (put hosts back, release the lock), saying
    *stopping* if given. Second: stop now."""

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        if stopping is not None:
            out.warn(stopping)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def show_accessories(session: Session, title: str, rows: list[AccessoryRow]) -> None:
    columns = ["host", "accessory", "state", "image", "status", "config", "detail"]
    cells = [[r.host, r.accessory, r.state, r.image, r.status, r.config, r.detail or "-"] for r in rows]
    session.out.table(title, columns, cells)
