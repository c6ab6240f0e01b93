"""The accessories' verbs: boot, reboot, remove, logs, status."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from deployer.cli.base import (
    AcceptKeysOption,
    BreakLockOption,
    JsonOption,
    Session,
    app,
    connected,
    select_hosts,
    session_of,
    show_accessories,
)
from deployer.errors import Interrupted, UsageError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from deployer.accessories import Row as AccessoryRow
    from deployer.commands import Login
    from deployer.config import Inventory
    from deployer.fleet import Fleet
    from deployer.inventory import Host


accessory_app = typer.Typer(
    name="accessory",
    help="The containers beside the app (accessories.<name>): boot, reboot, remove, logs, status. "
    "Rollouts and rollbacks never touch them.",
    no_args_is_help=True,
)
app.add_typer(accessory_app)

AccessoryHostsOption = Annotated[
    str | None,
    typer.Option(
        "--hosts",
        "-H",
        metavar="HOSTS",
        help="A group, 'all', or a comma-separated list of groups and hosts, among those the accessory "
        "runs on. (default: every host it runs on)",
    ),
]
AccessoryName = Annotated[str, typer.Argument(metavar="NAME", help="The accessory, as named under accessories.")]


def _change_accessory(
    ctx: typer.Context,
    verb: str,
    name: str,
    hosts: str | None,
    accept_new_host_keys: bool,
    break_lock: bool,
    work: Callable[[Fleet, list[str], dict[str, dict[str, SecretStr]], dict[str, Login | None]], list[AccessoryRow]],
    *,
    confirm: bool = False,
) -> None:
    """One change to accessory *name* (or every one, for `boot all`) under the deploy lock, its
    rows shown as a table; *confirm* asks first."""
    from deployer import accessories

    session = session_of(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    if name == "all" and verb != "boot":
        raise UsageError(f"{verb} takes one accessory at a time", hint=f"deploy accessory {verb} NAME")
    selected = _accessory_hosts(inventory, wanted, hosts)
    if confirm and not _confirm(f"{verb} {name} from {', '.join(host.name for host in selected)}?"):
        raise UsageError("not confirmed, so nothing was removed", hint="pass --yes to remove without asking")
    secrets, logins = _accessory_inputs(inventory, wanted) if verb != "remove" else ({}, {})
    with (
        _accessory_rows(session),
        connected(session, inventory, selected, accept_new_host_keys, f"accessory {verb} {name}", break_lock) as fleet,
    ):
        rows = work(fleet, wanted, secrets, logins)
    show_accessories(session, f"accessory {verb}", rows)


@accessory_app.command("boot")
def accessory_boot(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME|all", help="An accessory, or all of them.")],
    hosts: AccessoryHostsOption = None,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
) -> None:
    """Pull and start the accessory where it does not run; one that runs is left as it is."""
    from deployer import accessories

    _change_accessory(ctx, "boot", name, hosts, accept_new_host_keys, break_lock, accessories.boot)


@accessory_app.command("reboot")
def accessory_reboot(
    ctx: typer.Context,
    name: AccessoryName,
    hosts: AccessoryHostsOption = None,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
) -> None:
    """Recreate the accessory from the inventory, one host at a time, health-gated.

    The previous container is kept aside until the new one is healthy, and put back if it is not;
    the first host that fails ends the run. The accessory is down on each host while it restarts.
    """
    from deployer import accessories

    def reboot(fleet: Fleet, wanted: list[str], secrets: dict[str, dict[str, SecretStr]],
               logins: dict[str, Login | None]) -> list[AccessoryRow]:
        return accessories.reboot(fleet, name, secrets, logins)

    _change_accessory(ctx, "reboot", name, hosts, accept_new_host_keys, break_lock, reboot)


@accessory_app.command("remove")
def accessory_remove(
    ctx: typer.Context,
    name: AccessoryName,
    hosts: AccessoryHostsOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
) -> None:
    """Stop and remove the accessory's container on each host; its volumes are kept."""
    from deployer import accessories

    def remove(fleet: Fleet, wanted: list[str], secrets: dict[str, dict[str, SecretStr]],
               logins: dict[str, Login | None]) -> list[AccessoryRow]:
        return accessories.remove_all(fleet, name)

    _change_accessory(ctx, "remove", name, hosts, accept_new_host_keys, break_lock, remove, confirm=not yes)


@accessory_app.command("logs")
def accessory_logs(
    ctx: typer.Context,
    name: AccessoryName,
    hosts: AccessoryHostsOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", metavar="N", min=0, max=100_000, help="Lines from the end of each log.")
    ] = 100,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Print the accessory's logs from each host, each line prefixed by the host."""
    from deployer import accessories

    session = session_of(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    if name == "all":
        raise UsageError("logs takes one accessory at a time", hint="deploy accessory logs NAME")
    selected = _accessory_hosts(inventory, wanted, hosts)
    with connected(session, inventory, selected, accept_new_host_keys, None, reads_only=True, stopping=None) as fleet:
        try:
            accessories.show_logs(fleet, name, lines, follow=follow)
        except Interrupted:
            raise typer.Exit(Interrupted.exit_code) from None


@accessory_app.command("status")
def accessory_status(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="[NAME|all]", help="An accessory, or all of them.")] = "all",
    hosts: AccessoryHostsOption = None,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Show each accessory on each host: its image, state, and whether it runs the inventory's settings."""
    from deployer import accessories

    session = session_of(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    selected = _accessory_hosts(inventory, wanted, hosts)
    with connected(session, inventory, selected, accept_new_host_keys, None, partial=True) as fleet:
        rows = accessories.status(fleet, wanted)
    if as_json:
        session.out.json({"accessories": [row.to_dict() for row in rows]})
    else:
        show_accessories(session, "accessories", rows)


def _accessory_hosts(inventory: Inventory, wanted: list[str], hosts: str | None) -> list[Host]:
    """The hosts the accessories in *wanted* run on, those of --hosts only when it is given."""
    from deployer import accessories

    placed = list(dict.fromkeys(address for name in wanted for address in accessories.placed_on(inventory, name)))
    if hosts is None:
        return select_hosts(inventory, ",".join(placed))
    selected = [host for host in select_hosts(inventory, hosts) if host.name in placed]
    if not selected:
        raise UsageError(
            f"--hosts {hosts} selects no host {', '.join(wanted)} runs on, so nothing was changed",
            hint="it runs on: " + ", ".join(placed),
        )
    return selected


def _accessory_inputs(inventory: Inventory, wanted: list[str]) -> tuple[dict[str, dict[str, SecretStr]], dict[str, Login | None]]:
    """Per accessory, its secret values and its registry login, read before any host is asked."""
    from deployer import accessories, config

    secrets = {name: config.accessory_secrets(inventory, name) for name in wanted}
    images = {name: inventory.accessories[name].image for name in wanted}
    needs = any(accessories.in_app_registry(inventory, image) for image in images.values())
    password = config.registry_password(inventory) if needs else None
    return secrets, {name: accessories.login_for(inventory, image, password) for name, image in images.items()}


def _confirm(question: str) -> bool:
    """Ask on stderr, read the answer from stdin; anything but y or yes (stdin closed too) is a no."""
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


@contextmanager
def _accessory_rows(session: Session) -> Iterator[None]:
    """Show every host's row a failed accessory verb carries before the error itself."""
    from deployer.accessories import AccessoryError

    try:
        yield
    except AccessoryError as exc:
        show_accessories(session, "FAILED", exc.rows)
        raise
