"""Accessories: the containers beside the app (an exporter, a cache, a database) on some hosts.

They are not releases: each runs the image the inventory pins, under its own labels, so a
rollout or a rollback never reads, stops or prunes them. `deploy accessory` boots them where
missing, reboots one host at a time (health-gated, the previous container put back on a failed
check), removes them (never their volumes), and shows their logs and status.

The app reaches an accessory by its name: every accessory joins the app's accessories network
(``<app>-accessories``) with its name as network alias, and so does every release's container
(``docker network connect``, beside the proxy's network when there is one).

The commands, each next to the parser of its output, come first; the runner after them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from pydantic import SecretStr

from deployer import commands, health
from deployer.commands import Login, RemoteCommand, script
from deployer.config import Accessory, App, Inventory
from deployer.errors import CommandError, DeployError, Interrupted, UsageError
from deployer.fanout import Outcome
from deployer.fleet import Fleet
from deployer.inventory import Host

#: the app an accessory container belongs to
APP_LABEL = "deployer.accessory.app"
#: the accessory's name
NAME_LABEL = "deployer.accessory"
#: a hash of the settings the container was created with (see :func:`fingerprint`)
CONFIG_LABEL = "deployer.accessory.config"
#: what the previous container is renamed to while a reboot is health-gated
PREVIOUS = ".previous"


def network(app: App) -> str:
    """The app's accessories network: every accessory and every release of the app join it."""
    return f"{app.name}-accessories"


def container_name(app: App, name: str) -> str:
    """The container of accessory *name* (one per host)."""
    return f"{app.name}-{name}"


def fingerprint(accessory: Accessory) -> str:
    """A short hash of everything a container is created from (secret names, not their values):
    a container whose label differs was created from other settings."""
    settings = accessory.model_dump(mode="json", exclude={"hosts", "healthcheck"})
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def uses_image(inventory: Inventory, reference: str, digest: str) -> bool:
    """True when an accessory runs *reference*, or an image pinned to *digest*: pruning spares it."""
    return any(
        accessory.image == reference or accessory.image.endswith(f"@{digest}")
        for accessory in inventory.accessories.values()
    )


def in_app_registry(inventory: Inventory, image: str) -> bool:
    """True when *image* is in the app's registry, whose login it then uses."""
    from deployer.config import registry_server

    registry = inventory.app.registry_settings
    return registry is not None and registry_server(image) == registry.server


def login_for(inventory: Inventory, image: str, password: SecretStr | None) -> Login | None:
    """The app's registry login, for an image in the app's registry; no login for any other."""
    return commands.login_for(inventory.app.registry_settings, password) if in_app_registry(inventory, image) else None


# ---------------------------------------------------------------- placement


def placed_on(inventory: Inventory, name: str) -> list[str]:
    """The host names (addresses) accessory *name* runs on, in the inventory's order."""
    found: list[str] = []
    for target in inventory.accessories[name].hosts:
        members = inventory.hosts.get(target)
        addresses = [member.address for member in members] if isinstance(members, list) else [target]
        found += [address for address in addresses if address not in found]
    return found


def names(inventory: Inventory, wanted: str) -> list[str]:
    """The accessories *wanted* names: one name, or ``all``; UsageError for any other."""
    if not inventory.accessories:
        raise UsageError("the inventory has no accessories", hint="see docs/accessories.md")
    if wanted == "all":
        return list(inventory.accessories)
    if wanted not in inventory.accessories:
        raise UsageError(
            f"no accessory named {wanted!r} in the inventory",
            hint="accessories: " + ", ".join(inventory.accessories),
        )
    return [wanted]


# ---------------------------------------------------------------- commands


def join(app: App, *containers: str) -> RemoteCommand:
    """Create the app's accessories network unless it exists, and put *containers* on it (already
    there: nothing to do)."""
    return script(
        "join the accessories network",
        'n=$1; shift; docker network inspect "$n" >/dev/null 2>&1 || '
        f'docker network create --label {APP_LABEL}="$n" "$n" >/dev/null || '
        'docker network inspect "$n" >/dev/null || exit 1; '
        'for c in "$@"; do '
        "docker container inspect --format '{{json .NetworkSettings.Networks}}' \"$c\" | grep -qF \"\\\"$n\\\"\" "
        '|| docker network connect "$n" "$c" || exit 1; done',
        network(app),
        *containers,
    )


def pull(image: str, *, login: Login | None) -> RemoteCommand:
    """Pull *image* unless the host has it (a tag is taken as pinned: it is not pulled again)."""
    return commands.docker_script(
        "docker pull",
        'dk image inspect "$1" >/dev/null 2>&1 || { login || exit 1; dk pull -q "$1" >/dev/null; }',
        image,
        login=login,
        slow=True,
        interruptible=True,
    )


def create(app: App, name: str, accessory: Accessory, secrets: Mapping[str, SecretStr]) -> RemoteCommand:
    """Create (not start) the accessory's container on the app's accessories network, reachable
    there as *name*; secret values travel on stdin as for a release's container."""
    argv = [
        "docker", "create",
        "--name", container_name(app, name),
        "--label", f"{APP_LABEL}={app.name}",
        "--label", f"{NAME_LABEL}={name}",
        "--label", f"{CONFIG_LABEL}={fingerprint(accessory)}",
        "--restart", accessory.restart,
        "--stop-timeout", str(accessory.stop_timeout),
        "--network", network(app),
        "--network-alias", name,
    ]  # fmt: skip
    if accessory.init:
        argv.append("--init")
    for port in accessory.ports:
        argv += ["--publish", port]
    for volume in accessory.volumes:
        argv += ["--volume", volume]
    for key, value in accessory.env.items():
        argv += ["--env", f"{key}={value}"]
    return commands.with_secrets("docker create", list(argv), (accessory.image, *accessory.cmd), secrets)


def rename(old: str, new: str) -> RemoteCommand:
    """Give a container another name."""
    return RemoteCommand(("docker", "container", "rename", old, new))


def discard(name: str) -> RemoteCommand:
    """Remove a container whatever its state, if it exists; never its volumes (no ``-v``)."""
    return RemoteCommand(("docker", "container", "rm", "--force", name), ok_statuses=frozenset({0, 1}))


def remove(name: str, stop_timeout: int) -> RemoteCommand:
    """Stop and remove the accessory's container and a previous one a reboot left, never their
    volumes; prints ``removed`` or ``absent``."""
    command = script(
        "remove the accessory",
        'if docker container inspect "$1" >/dev/null 2>&1; then '
        'docker container stop --time "$2" "$1" >/dev/null && docker container rm "$1" >/dev/null || exit 1; '
        "echo removed; else echo absent; fi; "
        f'docker container rm --force "$1{PREVIOUS}" >/dev/null 2>&1 || true',
        name,
        str(stop_timeout),
    )
    return replace(command, waits=stop_timeout)


def list_containers(app: App) -> RemoteCommand:
    """The app's accessory containers on a host, one JSON object a line."""
    argv = ("docker", "container", "ls", "--all", "--no-trunc", "--filter", f"label={APP_LABEL}={app.name}")
    return RemoteCommand((*argv, "--format", "{{json .}}"), purpose="list the accessories")


@dataclass(frozen=True)
class Found:
    """An accessory container a host has."""

    name: str
    accessory: str
    state: str
    status: str
    image: str
    config: str

    @property
    def running(self) -> bool:
        """True while the container runs (or restarts)."""
        return self.state in ("running", "restarting")


def parse_list(output: str) -> dict[str, Found]:
    """Parse the output of :func:`list_containers`, by container name; skip lines it cannot read."""
    found = {}
    for line in output.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(item, dict):
            continue
        labels = dict(pair.split("=", 1) for pair in str(item.get("Labels", "")).split(",") if "=" in pair)
        name = str(item.get("Names", ""))
        found[name] = Found(
            name=name,
            accessory=labels.get(NAME_LABEL, ""),
            state=str(item.get("State", "")),
            status=str(item.get("Status", "")),
            image=str(item.get("Image", "")),
            config=labels.get(CONFIG_LABEL, ""),
        )
    return found


# ---------------------------------------------------------------- the runner


@dataclass(frozen=True)
class Row:
    """One accessory on one host: what a verb did there, or the state of its container (status)."""

    host: str
    accessory: str
    state: str
    image: str = "-"
    status: str = "-"
    config: str = "-"
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """The row as JSON-ready data."""
        return dict(self.__dict__)


#: what a verb may report that counts as a failure
FAILED = frozenset({"failed", "reverted", "unreachable"})

#: per accessory, the secret values its container gets
Secrets = Mapping[str, Mapping[str, SecretStr]]
#: per accessory, the registry login its image needs (None: no login)
Logins = Mapping[str, Login | None]


def _placed(fleet: Fleet, host: Host, wanted: Sequence[str]) -> list[str]:
    return [name for name in wanted if host.name in placed_on(fleet.inventory, name)]


def _prepare(fleet: Fleet, host: Host) -> dict[str, Found]:
    """Create the network, put the app's running release on it, and read the host's accessories."""
    running = fleet.states[host].running if host in fleet.states else None
    fleet.run(host, join(fleet.app, *([running.name] if running is not None else [])))
    return parse_list(fleet.run(host, list_containers(fleet.app)))


def _start(fleet: Fleet, host: Host, name: str, secrets: Secrets, logins: Logins, *, fresh: bool) -> None:
    """Create the accessory's container (when *fresh*), start it and wait for its health."""
    accessory = fleet.inventory.accessories[name]
    container = container_name(fleet.app, name)
    if fresh:
        fleet.run(host, pull(accessory.image, login=logins.get(name)))
        fleet.run(host, create(fleet.app, name, accessory, secrets.get(name, {})))
    fleet.run(host, commands.start(container))
    health.wait_for(fleet, host, container, accessory.healthcheck)


def _record(fleet: Fleet, host: Host, verb: str, name: str, result: str) -> None:
    image = fleet.inventory.accessories[name].image
    fleet.record(host, f"accessory {verb}", name, image, result, None)


def boot(fleet: Fleet, wanted: Sequence[str], secrets: Secrets, logins: Logins) -> list[Row]:
    """Start each accessory of *wanted* where it does not run, on every host it is placed on:
    pull, create, start and wait for its health; a running one is left as it is."""

    def one(host: Host) -> list[Row]:
        found = _prepare(fleet, host)
        rows = []
        for name in _placed(fleet, host, wanted):
            accessory = fleet.inventory.accessories[name]
            there = found.get(container_name(fleet.app, name))
            if there is not None and there.running:
                rows.append(Row(host.name, name, "running", there.image, there.status, _config(there, accessory)))
                continue
            try:
                if fleet.cancel.is_set():
                    raise Interrupted("interrupted")
                _start(fleet, host, name, secrets, logins, fresh=there is None)
            except DeployError as exc:
                _record(fleet, host, "boot", name, "failed")
                rows.append(Row(host.name, name, "failed", accessory.image, detail=exc.message))
                continue
            _record(fleet, host, "boot", name, "ok")
            rows.append(Row(host.name, name, "started" if there else "created", accessory.image))
        return rows

    return _rows(fleet, fleet.each(fleet.hosts, one), wanted, "boot")


def reboot(fleet: Fleet, name: str, secrets: Secrets, logins: Logins) -> list[Row]:
    """Recreate accessory *name* from the inventory, one host at a time: the previous container is
    stopped and kept aside until the new one is healthy, and put back if it is not. The first
    host that fails ends the run; the hosts after it are left as they were."""
    app, accessory = fleet.app, fleet.inventory.accessories[name]
    container = container_name(app, name)
    previous = container + PREVIOUS
    rows: list[Row] = []
    for host in fleet.hosts:
        if fleet.cancel.is_set() or (rows and rows[-1].state in FAILED):
            why = "the run stopped" if fleet.cancel.is_set() else "an earlier host failed"
            rows.append(Row(host.name, name, "untouched", detail=f"not reached: {why}"))
            continue
        fleet.out.progress(f"rebooting {name}", host=host.name)
        there: Found | None = None
        stopped = renamed = False
        try:
            there = _prepare(fleet, host).get(container)
            fleet.run(host, pull(accessory.image, login=logins.get(name)))
            fleet.run(host, discard(previous))  # left by a reboot that was killed
            if there is not None:
                if there.running:
                    fleet.run(host, commands.stop(container, accessory.stop_timeout))
                    stopped = True
                fleet.run(host, rename(container, previous))
                renamed = True
            fleet.run(host, create(app, name, accessory, secrets.get(name, {})))
            _start(fleet, host, name, secrets, logins, fresh=False)
        except DeployError as exc:
            outcome, detail = _put_back(fleet, host, container, there is None, stopped, renamed, exc)
            _record(fleet, host, "reboot", name, "failed")
            rows.append(Row(host.name, name, outcome, accessory.image, detail=detail))
            continue
        fleet.run(host, discard(previous))
        _record(fleet, host, "reboot", name, "ok")
        rows.append(Row(host.name, name, "rebooted", accessory.image))
    if fleet.cancel.is_set():
        raise Interrupted(f"accessory reboot interrupted; {_summary(rows)}")
    _raise_on_failure(rows, "reboot")
    return rows


def _put_back(
    fleet: Fleet, host: Host, container: str, new: bool, stopped: bool, renamed: bool, error: DeployError
) -> tuple[str, str]:
    """After a failed reboot: remove the new container, give the previous one its name back and
    start it if it ran. What it ends in (reverted, or failed) and what to tell the user."""
    try:
        if new or renamed:
            fleet.run(host, discard(container))
        if renamed:
            fleet.run(host, rename(container + PREVIOUS, container))
        if stopped:
            fleet.run(host, commands.start(container))
    except DeployError as exc:
        return "failed", f"{error.message}; the previous container could not be put back: {exc.message}"
    if renamed or stopped:
        return "reverted", f"{error.message}; the previous container was put back"
    return "failed", error.message


def _summary(rows: list[Row]) -> str:
    return ", ".join(f"{row.host}: {row.state}" for row in rows)


def remove_all(fleet: Fleet, name: str) -> list[Row]:
    """Stop and remove accessory *name* on every host; its volumes stay."""
    accessory = fleet.inventory.accessories[name]

    def one(host: Host) -> list[Row]:
        said = fleet.run(host, remove(container_name(fleet.app, name), accessory.stop_timeout)).strip()
        if said == "removed":
            _record(fleet, host, "remove", name, "ok")
        return [Row(host.name, name, said or "removed", accessory.image)]

    return _rows(fleet, fleet.each(fleet.hosts, one), [name], "remove")


def status(fleet: Fleet, wanted: Sequence[str] | None = None) -> list[Row]:
    """Every accessory placed on each (plain) host of the fleet, and any the host runs that the
    inventory no longer has: its image, state and whether it runs the inventory's settings."""
    inventory = fleet.inventory
    wanted = list(inventory.accessories) if wanted is None else list(wanted)
    hosts = [host for host in fleet.hosts if host.swarm is None and _placed(fleet, host, wanted)]

    def one(host: Host) -> list[Row]:
        found = parse_list(fleet.run(host, list_containers(fleet.app)))
        rows = []
        for name in _placed(fleet, host, wanted):
            there = found.pop(container_name(fleet.app, name), None)
            accessory = inventory.accessories[name]
            if there is None:
                rows.append(Row(host.name, name, "absent", accessory.image))
            else:
                rows.append(Row(host.name, name, there.state, there.image, there.status, _config(there, accessory)))
        for there in found.values():
            if there.accessory not in inventory.accessories and not there.name.endswith(PREVIOUS):
                rows.append(Row(host.name, there.accessory, there.state, there.image, there.status, "not in inventory"))
        return rows

    outcomes = fleet.each(hosts, one)
    rows = [Row(host.name, "-", "unreachable", detail=error.message) for host, error in fleet.unreachable.items()]
    for host, outcome in outcomes.items():
        rows += outcome.value or [Row(host.name, "-", "error", detail=outcome.error.message if outcome.error else "")]
    return rows


def _config(there: Found, accessory: Accessory) -> str:
    return "current" if there.config == fingerprint(accessory) else "changed: reboot to apply"


def _rows(
    fleet: Fleet, outcomes: Mapping[Host, Outcome[list[Row]]], wanted: Sequence[str], verb: str
) -> list[Row]:
    """Each host's rows, a failed host's as one row per accessory; raise when any failed."""
    rows: list[Row] = []
    for host, outcome in outcomes.items():
        if outcome.error is not None:
            detail = outcome.error.message
            rows += [Row(host.name, name, "failed", detail=detail) for name in _placed(fleet, host, wanted)]
        else:
            rows += outcome.value or []
    if fleet.cancel.is_set():
        raise Interrupted(f"interrupted; {_summary(rows)}")
    _raise_on_failure(rows, verb)
    return rows


def _raise_on_failure(rows: list[Row], verb: str) -> None:
    failed = [row for row in rows if row.state in FAILED]
    if failed:
        reasons = "\n  ".join(f"{row.host}: {row.accessory}: {row.detail}" for row in failed)
        raise AccessoryError(f"accessory {verb} failed on {len(failed)} host(s):\n  {reasons}", rows=rows)


class AccessoryError(CommandError):
    """An accessory verb failed on some hosts; carries every host's row."""

    def __init__(self, message: str, *, rows: list[Row]) -> None:
        super().__init__(message)
        self.rows = rows


# ---------------------------------------------------------------- logs


def show_logs(fleet: Fleet, name: str, lines: int, *, follow: bool) -> None:
    """The last *lines* of accessory *name* on each host, each line prefixed by the host; with
    *follow*, what it writes next, until Ctrl-C (then Interrupted)."""
    from deployer.targets import operate

    operate.container_logs(fleet, container_name(fleet.app, name), follow=follow, tail=lines)
