"""The `deploy` command line: typer wiring and rendering only.

Heavy modules (docker, paramiko, pydantic models) are imported inside the commands so that
`deploy --help` stays instant.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from deployer.errors import EXIT_CODES, ConfigError, ConnectError, DeployError, Interrupted, UsageError
from deployer.output import Output

if TYPE_CHECKING:
    from pydantic import SecretStr

    from deployer.accessories import Row as AccessoryRow
    from deployer.commands import Login
    from deployer.config import Inventory
    from deployer.fleet import Fleet
    from deployer.inventory import Host
    from deployer.local_registry import LocalRegistry
    from deployer.plan import Release
    from deployer.report import Report, Status
    from deployer.targets.proxied import ProxyRow

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


def _session(ctx: typer.Context) -> Session:
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


@app.command()
def version() -> None:
    """Print the version of deploy and the commit it was built from."""
    from deployer.version import describe

    typer.echo(f"deploy {describe()}")


@app.command("init")
def init_command(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="App name. (default: this directory's name, made valid)"),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            metavar="REPOSITORY",
            help="Image repository, without a tag. (default: from the git remote origin on GitHub "
            "or GitLab, else registry.example.com/NAME)",
        ),
    ] = None,
) -> None:
    """Write a commented inventory for the app in this directory; an existing file is never overwritten."""
    from deployer import config, init, lint

    session = _session(ctx)
    path = config.resolve_path(session.inventory_flag)
    choice = init.choose(Path.cwd(), name=name, image=image)
    text = init.render(choice.name, choice.image)
    inventory = init.validate(text, path)
    init.write(path, text)
    session.out.result(f"wrote {path}")
    session.out.progress(f"  app.name   {choice.name} ({choice.name_from})")
    session.out.progress(f"  app.image  {choice.image} ({choice.image_from})")
    try:
        for finding in lint.lint_file(inventory.dockerfile):
            session.out.warn(str(finding))
    except ConfigError as exc:
        session.out.warn(f"{exc.message}; deploy build needs one")
    session.out.progress("next:")
    for step in init.next_steps(path, choice):
        session.out.progress(f"  {step}")


@app.command()
def lint(ctx: typer.Context) -> None:
    """Point out what in the Dockerfile breaks layer caching, with the line and the fix."""
    from deployer import lint as linter

    session = _session(ctx)
    inventory = session.inventory()
    findings = linter.lint_file(inventory.dockerfile)
    for finding in findings:
        session.out.result(str(finding))
    if not findings:
        session.out.progress("no findings")


@app.command()
def build(
    ctx: typer.Context,
    allow_dirty: Annotated[
        bool,
        typer.Option("--allow-dirty", help="Build uncommitted changes under a tag marked -dirty-."),
    ] = False,
    cache_from: Annotated[
        list[str] | None,
        typer.Option("--cache-from", metavar="IMAGE", help="Image to reuse layers from (pulled first)."),
    ] = None,
) -> None:
    """Build the image of the HEAD commit, tagged with its first 12 hex digits.

    With app.registry false, also put it into the registry this machine keeps for the app.
    """
    from deployer import config, images, lint, source

    session = _session(ctx)
    inventory = session.inventory()
    revision = source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=allow_dirty)
    for finding in lint.lint_file(inventory.dockerfile):
        session.out.warn(str(finding))
    password = config.registry_password(inventory)
    with session.out.watching():
        built = images.build(
            inventory, revision, cache_from=cache_from or [], password=password, out=session.out
        )
    if inventory.app.no_registry:
        from deployer import local_registry

        with local_registry.serve(inventory.app.name, writable=True) as local:
            loaded = images.load_local(inventory, revision.tag, local.address, out=session.out)
        session.out.progress(f"{loaded.reference} is {loaded.digest} in the local registry ({local.storage})")
    session.out.result(built.reference)


@app.command()
def push(ctx: typer.Context, tag: TagOption = None) -> None:
    """Push the image of the HEAD commit (or --tag) and print its digest.

    With app.registry false there is nothing to push: it says so and exits 0.
    """
    from deployer import config, images, source

    session = _session(ctx)
    inventory = session.inventory()
    if inventory.app.no_registry:
        session.out.result(
            "app.registry is false: there is no registry to push to, and nothing to do; "
            "deploy build keeps each image for deploy rollout, which sends it to the hosts itself"
        )
        return
    tag = tag or source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=True).tag
    password = config.registry_password(inventory)
    with session.out.watching():
        pushed = images.push(inventory, tag, password=password, out=session.out)
    session.out.result(f"{pushed.reference}@{pushed.digest}")


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


def _select(inventory: Inventory, hosts: str) -> list[Host]:
    """The hosts *hosts* names: checked before anything else is asked of the registry or a host."""
    from deployer import inventory as hosts_module
    from deployer import transport

    return hosts_module.select(inventory, hosts, transport.ssh_config(inventory))


def _select_roles(inventory: Inventory, hosts: str, roles: str | None) -> tuple[list[Host], frozenset[str] | None]:
    """The hosts *hosts* names where a role of the run runs, and the roles `--roles` names."""
    from deployer import roles as roles_module

    only = roles_module.select(inventory.app, roles)
    return roles_module.narrow(inventory, _select(inventory, hosts), only), only


_PUTTING_BACK = "stopping: putting switched hosts back and releasing the lock (press Ctrl-C again to abandon)"


@contextmanager
def _fleet(
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


def _release(session: Session, inventory: Inventory, tag: str | None, local: LocalRegistry | None) -> Release:
    """The release to roll out: --tag or HEAD's tag, pinned to its digest in the registry (or in
    the *local* one, which then serves it)."""
    from deployer import config, registry, source
    from deployer.errors import TagNotFound
    from deployer.plan import Release

    tag = tag or source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=True).tag
    if local is None:
        digest = registry.digest(inventory, tag, password=config.registry_password(inventory))
    else:
        config.release_tag(tag, "--tag")
        found = registry.local_digest(local.address, inventory.app.image, tag)
        if found is None:
            raise TagNotFound(
                f"{inventory.app.image}:{tag} is not in the local registry ({local.storage})",
                hint="app.registry is false: deploy build puts each image there; build that commit here",
            )
        digest = found
    session.out.progress(f"release {tag} is {inventory.app.image}@{digest}")
    return Release(inventory.app.image, tag, digest, served_by=None if local is None else local.port)


@contextmanager
def _serving(session: Session, inventory: Inventory) -> Iterator[LocalRegistry | None]:
    """This machine's registry for the length of the run, when the app has none (else None)."""
    if not inventory.app.no_registry:
        yield None
        return
    from deployer import local_registry

    with local_registry.serve(inventory.app.name) as local:
        session.out.progress(f"serving releases from the local registry on {local.address} ({local.storage})")
        yield local


@contextmanager
def _reporting(session: Session, as_json: bool) -> Iterator[None]:
    """Show the per-host report an error carries before the error itself."""
    try:
        yield
    except DeployError as exc:
        if exc.report is not None:
            _finish(session, exc.report, as_json)
        raise


def _finish(session: Session, report: Report, as_json: bool) -> None:
    if as_json:
        session.out.json(report.to_dict())
    else:
        session.out.report(report)


@app.command()
def rollout(
    ctx: typer.Context,
    hosts: HostsOption,
    tag: TagOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commands for each host; change nothing.")
    ] = False,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
    roles: RolesOption = None,
) -> None:
    """Pull the release on every host, then switch them batch by batch, health-gated: on each
    host, every role it runs (or --roles).

    On a Swarm cluster: create or update the app's service, and let Swarm roll its tasks.
    """
    from deployer import config, hooks, targets

    session = _session(ctx)
    inventory = session.inventory()
    selected, only = _select_roles(inventory, hosts, roles)
    ended = hooks.Ended("rollout", [host.name for host in selected], tag or "")
    with hooks.after(inventory, session.out, ended, enabled=not dry_run):
        target = targets.pick(selected)
        secrets = config.container_secrets(inventory)
        password = config.registry_password(inventory)
        with _serving(session, inventory) as local:  # the app's own registry on this machine, or None
            release = _release(session, inventory, tag, local)
            ended.release = release.tag
            lock_for = None if dry_run else f"rollout {release.tag}"
            with (
                _reporting(session, as_json),
                session.out.watching(as_json=as_json or dry_run),
                _fleet(session, inventory, selected, accept_new_host_keys, lock_for, break_lock, roles=only) as fleet,
            ):
                if dry_run:
                    plans = target.rollout_plan(fleet, release, password=password, secrets=secrets)
                    if as_json:
                        session.out.json(plans)
                    else:
                        for host, lines in plans.items():
                            session.out.result(f"{host}:")
                            for line in lines:
                                session.out.result(f"  {line}")
                    return
                report = target.rollout(fleet, release, password=password, secrets=secrets)
        _finish(session, report, as_json)
        ended.every_host_ok = report.ok


@app.command()
def rollback(
    ctx: typer.Context,
    hosts: HostsOption,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="TAG", help="Release tag to go back to (still kept on the hosts)."),
    ] = None,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
    roles: RolesOption = None,
) -> None:
    """Put every host (every role of it, or --roles) back on the release it ran before (or
    --to TAG), from what it kept.

    On a Swarm cluster: move the service back to that release's digest and secrets.
    """
    from deployer import config, hooks, targets

    to = None if to is None else config.release_tag(to)
    session = _session(ctx)
    inventory = session.inventory()
    selected, only = _select_roles(inventory, hosts, roles)
    ended = hooks.Ended("rollback", [host.name for host in selected], to or "")
    with hooks.after(inventory, session.out, ended):
        target = targets.pick(selected)
        lock_for = f"rollback {to or ''}".strip()
        with (
            _reporting(session, as_json),
            session.out.watching(as_json=as_json),
            _fleet(session, inventory, selected, accept_new_host_keys, lock_for, break_lock, roles=only) as fleet,
        ):
            report = target.rollback(fleet, to)
        ended.release = report.release or ""
        _finish(session, report, as_json)
        ended.every_host_ok = report.ok


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

    session = _session(ctx)
    inventory = session.inventory()
    selected, only = _select_roles(inventory, hosts, roles)
    with _fleet(session, inventory, selected, accept_new_host_keys, None, partial=True, roles=only) as fleet:
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
        _show_accessories(session, "accessories", extra)


@app.command()
def history(
    ctx: typer.Context,
    hosts: HostsOption,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Show the releases each host recorded, oldest first."""
    session = _session(ctx)
    inventory = session.inventory()
    selected = _select(inventory, hosts)
    with _fleet(session, inventory, selected, accept_new_host_keys, None, reads_only=True) as fleet:
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


def _plain_hosts(inventory: Inventory, hosts: str, host: str | None, verb: str) -> list[Host]:
    """The plain hosts *hosts* selects, or only *host* among them; a Swarm cluster is refused."""
    selected = _plain(
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

    session = _session(ctx)
    inventory = session.inventory()
    selected = _plain_hosts(inventory, hosts, host, "run")
    secrets = config.container_secrets(inventory)
    if tag is not None and inventory.app.no_registry:
        raise UsageError(
            "run --tag pulls the release from the registry, and app.registry is false; nothing was run",
            hint="roll the release out first, then run without --tag (on the release a host serves)",
        )
    release = None if tag is None else _release(session, inventory, config.release_tag(tag, "--tag"), None)
    password = None if tag is None else config.registry_password(inventory)
    stopping = "stopping: removing the one-off container (press Ctrl-C again to abandon it)"
    with _fleet(
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

    session = _session(ctx)
    inventory = session.inventory()
    selected, only = _select_roles(inventory, hosts, roles)
    since = operate.since(since)
    with _fleet(
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

    session = _session(ctx)
    inventory = session.inventory()
    only = roles_module.select(inventory.app, roles)
    selected = roles_module.narrow(inventory, _plain_hosts(inventory, hosts, host, "exec"), only)
    if interactive:
        if len(selected) != 1:
            raise UsageError(
                f"exec -it opens a terminal on one host, and --hosts {hosts} selects {len(selected)}",
                hint="name the host with --host",
            )
        if not terminal.is_terminal(sys.stdin) or not terminal.is_terminal(sys.stdout):
            raise UsageError("exec -it needs a terminal on stdin and stdout", hint="run it without -it")
    with _fleet(
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
    session = _session(ctx)
    inventory = session.inventory()
    with _fleet(session, inventory, _plain(inventory, hosts), accept_keys, None, reads_only=reads_only) as fleet:
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

    session = _session(ctx)
    inventory = session.inventory()
    selected = _plain(inventory, hosts)
    with _fleet(session, inventory, selected, accept_new_host_keys, "proxy upgrade", break_lock) as fleet:
        _proxy_rows(session, proxied.upgrade(fleet))


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

    session = _session(ctx)
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
        _fleet(session, inventory, selected, accept_new_host_keys, f"accessory {verb} {name}", break_lock) as fleet,
    ):
        rows = work(fleet, wanted, secrets, logins)
    _show_accessories(session, f"accessory {verb}", rows)


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

    session = _session(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    if name == "all":
        raise UsageError("logs takes one accessory at a time", hint="deploy accessory logs NAME")
    selected = _accessory_hosts(inventory, wanted, hosts)
    with _fleet(session, inventory, selected, accept_new_host_keys, None, reads_only=True, stopping=None) as fleet:
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

    session = _session(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    selected = _accessory_hosts(inventory, wanted, hosts)
    with _fleet(session, inventory, selected, accept_new_host_keys, None, partial=True) as fleet:
        rows = accessories.status(fleet, wanted)
    if as_json:
        session.out.json({"accessories": [row.to_dict() for row in rows]})
    else:
        _show_accessories(session, "accessories", rows)


def _accessory_hosts(inventory: Inventory, wanted: list[str], hosts: str | None) -> list[Host]:
    """The hosts the accessories in *wanted* run on, those of --hosts only when it is given."""
    from deployer import accessories

    placed = list(dict.fromkeys(address for name in wanted for address in accessories.placed_on(inventory, name)))
    if hosts is None:
        return _select(inventory, ",".join(placed))
    selected = [host for host in _select(inventory, hosts) if host.name in placed]
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
        _show_accessories(session, "FAILED", exc.rows)
        raise


def _show_accessories(session: Session, title: str, rows: list[AccessoryRow]) -> None:
    columns = ["host", "accessory", "state", "image", "status", "config", "detail"]
    cells = [[r.host, r.accessory, r.state, r.image, r.status, r.config, r.detail or "-"] for r in rows]
    session.out.table(title, columns, cells)


@app.command()
def setup(ctx: typer.Context, hosts: HostsOption, accept_new_host_keys: AcceptKeysOption = False) -> None:
    """Check every host once (SSH, Docker engine, free disk, proxy ports) and start the proxy.

    Changes nothing else. Exits 2 when a host is not ready, after printing every host's row.
    """
    from deployer.targets import proxied

    session = _session(ctx)
    inventory = session.inventory()
    with _fleet(session, inventory, _plain(inventory, hosts), accept_new_host_keys, None) as fleet:
        rows = proxied.setup(fleet)
    columns = ["host", "docker", "free disk", "proxy ports", "proxy", "ready"]
    cells = [[r.host, r.docker, r.free_disk, r.ports, r.proxy, "yes" if r.ok else "NO"] for r in rows]
    session.out.table("setup", columns, cells)
    if not all(row.ok for row in rows):
        raise UsageError("some hosts are not ready; see the warnings above")


def _plain(
    inventory: Inventory,
    hosts: str,
    *,
    lead: str = "",
    why: str = "Swarm publishes ports itself, deploy runs no proxy there",
    hint: str = "select plain hosts' groups",
) -> list[Host]:
    """The selected plain hosts; a Swarm cluster among them is refused, saying *why* (by default:
    it has no proxy of deploy's)."""
    selected = _select(inventory, hosts)
    clusters = [host.name for host in selected if host.swarm is not None]
    if clusters:
        raise UsageError(f"{lead}--hosts selects Swarm clusters ({', '.join(clusters)}): {why}", hint=hint)
    return selected


def main() -> NoReturn:
    """Entry point: run the CLI and turn every error into one message and its exit code."""
    out = Output()
    try:
        code = app(prog_name="deploy", standalone_mode=False)  # --help, typer.Exit: an exit code
    except typer.TyperException as exc:  # an unknown verb or flag, a missing or bad value: exit 2
        if exc.format_message():
            out.error(UsageError(exc.format_message(), hint=_usage_hint(exc)))
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        out.stderr.write("interrupted\n")
        sys.exit(130)
    except DeployError as exc:
        out.error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: one line, and the traceback (never with locals) on --verbose
        if "-v" in sys.argv or "--verbose" in sys.argv:
            traceback.print_exc()
        out.error(
            DeployError(
                f"unexpected {type(exc).__name__}: {exc}", hint="run again with --verbose for the traceback"
            )
        )
        sys.exit(DeployError.exit_code)
    if code == 130:  # typer turns a Ctrl-C it catches into this exit code
        out.stderr.write("interrupted\n")
    sys.exit(code if isinstance(code, int) else 0)


_GLOBAL_OPTIONS = ("-i", "--inventory", "-v", "--verbose", "-q", "--quiet")


def _usage_hint(exc: typer.TyperException) -> str:
    """Where to read the right usage; a global option given after the command goes before it."""
    if getattr(exc, "option_name", None) in _GLOBAL_OPTIONS:
        return "global options go before the command: deploy -i PATH status --hosts prod"
    ctx = getattr(exc, "ctx", None)
    return f"see {ctx.command_path if ctx is not None else 'deploy'} --help"
