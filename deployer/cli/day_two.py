"""The verbs of a running app: status, history, run, logs, exec."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from deployer.cli.base import (
    AcceptKeysOption,
    HostsOption,
    JsonOption,
    RolesOption,
    Session,
    app,
    connected,
    plain_hosts,
    select_hosts,
    select_roles,
    session_of,
    show_accessories,
)
from deployer.cli.releases import pinned_release
from deployer.errors import ConnectError, DeployError, Interrupted, UsageError

if TYPE_CHECKING:
    from deployer.accessories import Row as AccessoryRow
    from deployer.config import Inventory
    from deployer.fleet import Fleet
    from deployer.inventory import Host
    from deployer.report import Status


@app.command()
def status(
    ctx: typer.Context,
    hosts: HostsOption,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
    roles: RolesOption = None,
) -> None:
    """Show per host and role (per task on a Swarm cluster) the release it serves, its digest,
    health and uptime, and any drift."""
    from deployer import targets

    session = session_of(ctx)
    inventory = session.inventory()
    selected, only = select_roles(inventory, hosts, roles)
    with connected(session, inventory, selected, accept_new_host_keys, None, partial=True, roles=only) as fleet:
        result = targets.status(fleet)
        unreachable = dict(fleet.unreachable)
        extra = _accessories_status(fleet) if inventory.accessories else None
    _show_status(session, result, as_json, extra, with_roles=bool(inventory.app.roles))
    if unreachable:
        _unreachable(unreachable)


def _accessories_status(fleet: Fleet) -> list[AccessoryRow]:
    """The accessories of the hosts `status` reads, listed apart from the releases."""
    from dataclasses import replace

    from deployer import accessories

    reached = replace(fleet, unreachable={})  # the releases' table names those hosts already
    return accessories.status(reached)


def _show_status(
    session: Session,
    result: Status,
    as_json: bool,
    extra: list[AccessoryRow] | None = None,
    *,
    with_roles: bool = False,
) -> None:
    if as_json:
        data = result.to_dict()
        if extra is not None:
            data["accessories"] = [row.to_dict() for row in extra]
        session.out.json(data)
        return
    rows = [
        [
            row.host,
            *([row.role or "-"] if with_roles else []),
            *(str(value or "-") for value in (row.release, row.digest, row.state, row.health, row.uptime)),
        ]
        for row in result.rows
    ]
    columns = ["host", *(["role"] if with_roles else []), "release", "digest", "state", "health", "uptime"]
    session.out.table("status", columns, rows)
    if result.drift:
        session.out.warn("drift: the hosts do not all serve the same release")
    if extra is not None:
        show_accessories(session, "accessories", extra)


@app.command()
def history(
    ctx: typer.Context,
    hosts: HostsOption,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Show the releases each host recorded, oldest first."""
    session = session_of(ctx)
    inventory = session.inventory()
    selected = select_hosts(inventory, hosts)
    with connected(session, inventory, selected, accept_new_host_keys, None, reads_only=True) as fleet:
        result = {
            host: [{**entry.to_dict(), "role": entry.role_name} for entry in entries]
            for host, entries in fleet.history().items()
        }
    if as_json:
        session.out.json(result)
        return
    columns = ["time", *(["role"] if inventory.app.roles else []), "action", "release", "result", "by", "previous"]
    for host, entries in result.items():
        session.out.table(host, columns, [[str(e.get(col) or "-") for col in columns] for e in entries])


CommandArgument = Annotated[
    list[str],
    typer.Argument(metavar="COMMAND", help="The command and its arguments, after --.", show_default=False),
]
OneHostOption = Annotated[
    str | None,
    typer.Option("--host", metavar="HOST", help="The one host of --hosts to work on."),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=1,
        max=7 * 24 * 3600,
        metavar="SECONDS",
        help="Stop the command after this long (exit 7). (default: 3600)",
    ),
]
_ONE_OFF = {"allow_interspersed_args": False}


def _hosts_to_run_on(inventory: Inventory, hosts: str, host: str | None, verb: str) -> list[Host]:
    """The plain hosts *hosts* selects, or only *host* among them; a Swarm cluster is refused."""
    selected = plain_hosts(
        inventory,
        hosts,
        lead=f"deploy {verb} works on plain hosts, and ",
        why="their tasks run on nodes deploy does not log in to; nothing was run",
        hint="log in to a node and use docker there; deploy logs works on a cluster",
    )
    if host is None:
        return selected
    chosen = [h for h in selected if h.name == host]
    if not chosen:
        raise UsageError(
            f"--host {host} is not one of the hosts --hosts {hosts} selects",
            hint="hosts: " + ", ".join(h.name for h in selected),
        )
    return chosen


@app.command(context_settings=_ONE_OFF)
def run(
    ctx: typer.Context,
    hosts: HostsOption,
    command: CommandArgument,
    host: OneHostOption = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", "-t", metavar="TAG", help="Release to run. (default: the one the host serves)"),
    ] = None,
    timeout: TimeoutOption = 3600,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Run a command once in a new container of the release a host serves (or --tag), with the
    app's env, secrets and volumes, on --host or the first host that answers; exit with its exit code.

    Its output streams as it comes; the container is removed afterwards, and at once on Ctrl-C.
    """
    from deployer import config
    from deployer.targets import operate

    session = session_of(ctx)
    inventory = session.inventory()
    selected = _hosts_to_run_on(inventory, hosts, host, "run")
    secrets = config.container_secrets(inventory)
    if tag is not None and inventory.app.no_registry:
        raise UsageError(
            "run --tag pulls the release from the registry, and app.registry is false; nothing was run",
            hint="roll the release out first, then run without --tag (on the release a host serves)",
        )
    release = None if tag is None else pinned_release(session, inventory, config.release_tag(tag, "--tag"), None)
    password = None if tag is None else config.registry_password(inventory)
    stopping = "stopping: removing the one-off container (press Ctrl-C again to abandon it)"
    with connected(
        session, inventory, selected, accept_new_host_keys, None, partial=True, reads_only=True, stopping=stopping
    ) as fleet:
        if not fleet.hosts:
            _unreachable(fleet.unreachable)
        status = operate.run(
            fleet, fleet.hosts[0], command, secrets, release=release, password=password, timeout=timeout
        )
    if status:
        raise typer.Exit(status)


def _unreachable(unreachable: dict[Host, DeployError]) -> NoReturn:
    """End a read-only run that left hosts out: one error for all, of the first one's class."""
    first = next(iter(unreachable.values()))
    reasons = "\n  ".join(error.message for error in unreachable.values())
    how = "reached" if all(isinstance(e, ConnectError) for e in unreachable.values()) else "read"
    raise type(first)(f"{len(unreachable)} host(s) could not be {how}:\n  {reasons}", hint=first.hint)


@app.command()
def logs(
    ctx: typer.Context,
    hosts: HostsOption,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing new lines until Ctrl-C.")] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, max=1_000_000, metavar="N", help="Lines to show from each container's end.")
    ] = 100,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="WHEN", help="Only lines since a duration ago (10m, 1h30m) or a time."),
    ] = None,
    roles: RolesOption = None,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Show the running containers' logs from every host (a Swarm cluster: its service's), each
    line prefixed with its host (and role), merged as they come."""
    from deployer.targets import operate

    session = session_of(ctx)
    inventory = session.inventory()
    selected, only = select_roles(inventory, hosts, roles)
    since = operate.since(since)
    with connected(
        session,
        inventory,
        selected,
        accept_new_host_keys,
        None,
        partial=True,
        reads_only=True,
        roles=only,
        stopping=None,
    ) as fleet:
        for error in fleet.unreachable.values():
            session.out.warn(error.message)
        try:
            operate.logs(fleet, follow=follow, tail=lines, since=since)
        except Interrupted:
            raise typer.Exit(Interrupted.exit_code) from None
        unreachable = dict(fleet.unreachable)
    if unreachable:
        _unreachable(unreachable)


@app.command("exec", context_settings=_ONE_OFF)
def exec_command(
    ctx: typer.Context,
    hosts: HostsOption,
    command: CommandArgument,
    host: OneHostOption = None,
    interactive: Annotated[
        bool,
        typer.Option("-it", "--interactive", help="An interactive terminal (one host only), e.g. for a shell."),
    ] = False,
    roles: RolesOption = None,
    timeout: TimeoutOption = 3600,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Run a command in the running container of every host and role (prefixed output, the
    worst exit code) or of --host; with -it, on a terminal."""
    from deployer import roles as roles_module
    from deployer import terminal
    from deployer.targets import operate

    session = session_of(ctx)
    inventory = session.inventory()
    only = roles_module.select(inventory.app, roles)
    selected = roles_module.narrow(inventory, _hosts_to_run_on(inventory, hosts, host, "exec"), only)
    if interactive:
        if len(selected) != 1:
            raise UsageError(
                f"exec -it opens a terminal on one host, and --hosts {hosts} selects {len(selected)}",
                hint="name the host with --host",
            )
        if not terminal.is_terminal(sys.stdin) or not terminal.is_terminal(sys.stdout):
            raise UsageError("exec -it needs a terminal on stdin and stdout", hint="run it without -it")
    with connected(
        session, inventory, selected, accept_new_host_keys, None, reads_only=True, roles=only, stopping=None
    ) as fleet:
        try:
            if interactive:
                with terminal.raw(sys.stdin.fileno()):
                    status = operate.exec_terminal(
                        fleet,
                        command,
                        stdin_fd=sys.stdin.fileno(),
                        stdout_fd=sys.stdout.fileno(),
                        size=terminal.size(sys.stdout.fileno()),
                        term=terminal.kind(),
                    )
            else:
                status = operate.exec_all(fleet, command, timeout)
        except Interrupted:
            raise typer.Exit(Interrupted.exit_code) from None
    if status:
        raise typer.Exit(status)
