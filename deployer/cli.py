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

from deployer.errors import EXIT_CODES, ConfigError, DeployError, UsageError
from deployer.output import Output

if TYPE_CHECKING:
    from pydantic import SecretStr

    from deployer.accessories import Row as AccessoryRow
    from deployer.commands import Login
    from deployer.config import Inventory
    from deployer.fleet import Fleet
    from deployer.inventory import Host
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


def _session(ctx: typer.Context) -> Session:
    session = ctx.obj
    assert isinstance(session, Session)
    return session


@app.callback()
def _global(
    ctx: typer.Context,
    inventory: InventoryOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine and command detail.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show only errors and results.")] = False,
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
    """Build the image of the HEAD commit, tagged with its first 12 hex digits."""
    from deployer import config, images, lint, source

    session = _session(ctx)
    inventory = session.inventory()
    revision = source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=allow_dirty)
    for finding in lint.lint_file(inventory.dockerfile):
        session.out.warn(str(finding))
    built = images.build(
        inventory,
        revision,
        cache_from=cache_from or [],
        password=config.registry_password(inventory),
        out=session.out,
    )
    session.out.result(built.reference)


@app.command()
def push(ctx: typer.Context, tag: TagOption = None) -> None:
    """Push the image of the HEAD commit (or --tag) and print its digest."""
    from deployer import config, images, source

    session = _session(ctx)
    inventory = session.inventory()
    tag = tag or source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=True).tag
    pushed = images.push(inventory, tag, password=config.registry_password(inventory), out=session.out)
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
) -> Iterator[Fleet]:
    """Connect to each selected host, take the lock if asked, and stop cleanly on Ctrl-C.

    A run that only reads (*reads_only*) starts no proxy, so it needs no registry login; it may
    also go on without the hosts it cannot reach (*partial*)."""
    from deployer import fleet as fleet_module
    from deployer import transport

    cancel = threading.Event()
    connect = transport.connector(
        inventory, accept_new_host_keys=accept_keys, on_new_key=session.out.warn, cancel=cancel
    )
    with (
        _cancel_on_signals(cancel, session.out),
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
        ) as fleet,
    ):
        yield fleet


def _proxy_login(inventory: Inventory) -> Login | None:
    """The registry login hosts need to pull the proxy's image, when it is in the app's registry."""
    from deployer import commands, config

    app = inventory.app
    if app.proxy is None or app.registry is None or not app.proxy.image.startswith(f"{app.registry.server}/"):
        return None
    return commands.login_for(app.registry, config.registry_password(inventory))


@contextmanager
def _cancel_on_signals(cancel: threading.Event, out: Output) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: finish cleanly (put hosts back, release the lock). Second: stop now."""

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        out.warn(
            "stopping: putting switched hosts back and releasing the lock (press Ctrl-C again to abandon)"
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _release(session: Session, inventory: Inventory, tag: str | None) -> Release:
    """The release to roll out: --tag or HEAD's tag, pinned to its digest in the registry."""
    from deployer import config, registry, source
    from deployer.plan import Release

    tag = tag or source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=True).tag
    digest = registry.digest(inventory, tag, password=config.registry_password(inventory))
    session.out.progress(f"release {tag} is {inventory.app.image}@{digest}")
    return Release(inventory.app.image, tag, digest)


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
) -> None:
    """Pull the release on every host, then switch them batch by batch, health-gated.

    On a Swarm cluster: create or update the app's service, and let Swarm roll its tasks.
    """
    from deployer import config, targets

    session = _session(ctx)
    inventory = session.inventory()
    selected = _select(inventory, hosts)
    target = targets.pick(selected)
    secrets = config.container_secrets(inventory)
    password = config.registry_password(inventory)
    release = _release(session, inventory, tag)
    lock_for = None if dry_run else f"rollout {release.tag}"
    with (
        _reporting(session, as_json),
        _fleet(session, inventory, selected, accept_new_host_keys, lock_for, break_lock) as fleet,
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
) -> None:
    """Put every host back on the release it ran before (or --to TAG), from what it kept.

    On a Swarm cluster: move the service back to that release's digest and secrets.
    """
    from deployer import config, targets

    to = None if to is None else config.release_tag(to)
    session = _session(ctx)
    inventory = session.inventory()
    selected = _select(inventory, hosts)
    target = targets.pick(selected)
    lock_for = f"rollback {to or ''}".strip()
    with (
        _reporting(session, as_json),
        _fleet(session, inventory, selected, accept_new_host_keys, lock_for, break_lock) as fleet,
    ):
        report = target.rollback(fleet, to)
    _finish(session, report, as_json)


@app.command()
def status(
    ctx: typer.Context,
    hosts: HostsOption,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
) -> None:
    """Show per host (per task on a Swarm cluster) the release it serves, its digest, health and
    uptime, and any drift."""
    from deployer import targets

    session = _session(ctx)
    inventory = session.inventory()
    with _fleet(session, inventory, _select(inventory, hosts), accept_new_host_keys, None, partial=True) as fleet:
        result = targets.status(fleet)
        unreachable = dict(fleet.unreachable)
        extra = _accessories_status(fleet) if inventory.accessories else None
    _show_status(session, result, as_json, extra)
    if unreachable:
        first = next(iter(unreachable.values()))
        reasons = "\n  ".join(error.message for error in unreachable.values())
        raise type(first)(f"{len(unreachable)} host(s) could not be reached:\n  {reasons}", hint=first.hint)


def _accessories_status(fleet: Fleet) -> list[AccessoryRow]:
    """The accessories of the hosts `status` reads, listed apart from the releases."""
    from dataclasses import replace

    from deployer import accessories

    reached = replace(fleet, unreachable={})  # the releases' table names those hosts already
    return accessories.status(reached)


def _show_status(
    session: Session, result: Status, as_json: bool, extra: list[AccessoryRow] | None = None
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
            *(str(value or "-") for value in (row.release, row.digest, row.state, row.health, row.uptime)),
        ]
        for row in result.rows
    ]
    session.out.table("status", ["host", "release", "digest", "state", "health", "uptime"], rows)
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
        result = {host: [entry.to_dict() for entry in entries] for host, entries in fleet.history().items()}
    if as_json:
        session.out.json(result)
        return
    columns = ["time", "action", "release", "result", "by", "previous"]
    for host, entries in result.items():
        session.out.table(host, columns, [[str(e.get(col) or "-") for col in columns] for e in entries])


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

    session = _session(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    selected = _accessory_hosts(inventory, wanted, hosts)
    secrets, logins = _accessory_inputs(inventory, wanted)
    with (
        _accessory_rows(session),
        _fleet(session, inventory, selected, accept_new_host_keys, f"accessory boot {name}", break_lock) as fleet,
    ):
        rows = accessories.boot(fleet, wanted, secrets, logins)
    _show_accessories(session, "accessory boot", rows)


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

    session = _session(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    if name == "all":
        raise UsageError("reboot takes one accessory at a time", hint="deploy accessory reboot NAME")
    selected = _accessory_hosts(inventory, wanted, hosts)
    secrets, logins = _accessory_inputs(inventory, wanted)
    with (
        _accessory_rows(session),
        _fleet(session, inventory, selected, accept_new_host_keys, f"accessory reboot {name}", break_lock) as fleet,
    ):
        rows = accessories.reboot(fleet, name, secrets, logins)
    _show_accessories(session, "accessory reboot", rows)


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

    session = _session(ctx)
    inventory = session.inventory()
    wanted = accessories.names(inventory, name)
    if name == "all":
        raise UsageError("remove takes one accessory at a time", hint="deploy accessory remove NAME")
    selected = _accessory_hosts(inventory, wanted, hosts)
    if not yes and not _confirm(f"remove {name} from {', '.join(host.name for host in selected)}?"):
        raise UsageError("not confirmed, so nothing was removed", hint="pass --yes to remove without asking")
    with (
        _accessory_rows(session),
        _fleet(session, inventory, selected, accept_new_host_keys, f"accessory remove {name}", break_lock) as fleet,
    ):
        rows = accessories.remove_all(fleet, name)
    _show_accessories(session, "accessory remove", rows)


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

    def print_line(host: str, line: str) -> None:
        session.out.result(f"{host} | {line}")

    with _fleet(session, inventory, selected, accept_new_host_keys, None, reads_only=True) as fleet:
        if follow:
            accessories.follow_logs(fleet, name, lines, print_line)
        else:
            accessories.show_logs(fleet, name, lines, print_line)


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


def _plain(inventory: Inventory, hosts: str) -> list[Host]:
    """The selected plain hosts; a Swarm cluster has no proxy of deploy's."""
    selected = _select(inventory, hosts)
    clusters = [host.name for host in selected if host.swarm is not None]
    if clusters:
        raise UsageError(
            f"--hosts selects Swarm clusters ({', '.join(clusters)}): Swarm publishes ports itself, "
            "deploy runs no proxy there",
            hint="select plain hosts' groups",
        )
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
