"""What a Swarm cluster's manager runs for the app's service, and how its answers are read.

A Swarm cluster runs the app as one service named after it; only a manager is reached, and
Swarm's own update machinery replaces the tasks. The service carries the release labels.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from deployer import commands
from deployer.commands import APP_LABEL, DIGEST_LABEL, RELEASE_LABEL, Login, RemoteCommand, logged_in, script
from deployer.config import App, Swarm
from deployer.state import state_dir


def read_swarm(app: App) -> RemoteCommand:
    """The nodes, then the service and its tasks when the service exists: JSON lines, ``---`` between."""
    return script(
        "read the Swarm service",
        'docker node ls --format "{{json .}}" || exit 1; echo "---"; '
        'docker service inspect "$1" >/dev/null 2>&1 || exit 0; '
        'docker service inspect --format "{{json .}}" "$1" || exit 1; echo "---"; '
        'docker service ps --no-trunc --format "{{json .}}" "$1"',
        app.name,
    )


def create_secret(app: App, name: str, value: SecretStr) -> RemoteCommand:
    """Create the Swarm secret *name* from stdin, unless it exists (the name versions the value)."""
    return script(
        "create a Swarm secret",
        'docker secret inspect "$1" >/dev/null 2>&1 </dev/null && exit 0; '
        'docker secret create --label "$2" "$1" - >/dev/null',
        name,
        f"{APP_LABEL}={app.name}",
        stdin=value.get_secret_value().encode(),
    )


def list_secrets(app: App) -> RemoteCommand:
    """The names of the app's Swarm secret versions, one a line."""
    return RemoteCommand(
        ("docker", "secret", "ls", "--filter", f"label={APP_LABEL}={app.name}", "--format", "{{.Name}}"),
        purpose="list the Swarm secrets",
    )


def parse_secrets(output: str) -> list[str]:
    """Parse the output of :func:`list_secrets`."""
    return sorted(line.strip() for line in output.splitlines() if line.strip())


def remove_secrets(names: Sequence[str]) -> RemoteCommand:
    """Remove Swarm secrets; one still used by a service is refused by Docker and kept."""
    return RemoteCommand(("docker", "secret", "rm", *names), ok_statuses=frozenset({0, 1}))


def publish_spec(port: str) -> str:
    """A ``HOST:CONTAINER[/PROTO]`` port as a host-mode publish (Swarm's routing mesh is not used)."""
    mapping, _, protocol = port.partition("/")
    *published, target = mapping.split(":")
    spec = f"mode=host,target={target}"
    if published:
        spec += f",published={published[-1]}"
    return f"{spec},protocol={protocol or 'tcp'}"


def mount_spec(volume: str) -> str:
    """A ``SOURCE:/path[:ro|rw]`` volume as a mount: a bind mount when SOURCE is a path."""
    source, target, *mode = volume.split(":")
    kind = "bind" if source.startswith("/") else "volume"
    return f"type={kind},source={source},target={target}" + (",readonly" if mode == ["ro"] else "")


def secret_spec(name: str, target: str) -> str:
    """The secret *name*, as the file /run/secrets/<target> in the task's containers."""
    return f"source={name},target={target}"


def _restart_flags(policy: str) -> list[str]:
    """A ``docker run`` restart policy in Swarm's terms (``unless-stopped`` is ``any`` there)."""
    condition = {"no": "none", "always": "any", "unless-stopped": "any"}.get(policy, "on-failure")
    attempts = policy.partition(":")[2] or "0"
    return ["--restart-condition", condition, "--restart-max-attempts", attempts]


def _service_settings(app: App, swarm: Swarm) -> list[str]:
    """Flags create and update share: restarts, stopping, init, and Swarm's update and rollback."""
    spec, update = app.container, swarm.update
    argv = [
        *_restart_flags(spec.restart),
        "--stop-grace-period", f"{spec.stop_timeout}s",
        f"--init={str(spec.init).lower()}",
        "--update-failure-action", "rollback",
        # A task that fails while going back (a port still held for a moment) must not pause
        # the rollback half way: Swarm keeps rescheduling until the old release runs again.
        "--rollback-failure-action", "continue",
    ]  # fmt: skip
    for phase in ("update", "rollback"):
        argv += [
            f"--{phase}-parallelism", str(update.parallelism),
            f"--{phase}-delay", f"{update.delay:g}s",
            f"--{phase}-monitor", f"{update.monitor:g}s",
            f"--{phase}-order", update.order,
        ]  # fmt: skip
    return argv


def _release_labels(app: App, release: str, digest: str, flag: str) -> list[str]:
    labels = (f"{APP_LABEL}={app.name}", f"{RELEASE_LABEL}={release}", f"{DIGEST_LABEL}={digest}")
    return [word for label in labels for word in (flag, label)]


@dataclass(frozen=True)
class ServiceChanges:
    """What ``docker service update`` removes from and adds to a service's spec, flag values as is."""

    env_rm: tuple[str, ...] = ()
    env_add: tuple[str, ...] = ()
    publish_rm: tuple[str, ...] = ()
    publish_add: tuple[str, ...] = ()
    mount_rm: tuple[str, ...] = ()
    mount_add: tuple[str, ...] = ()
    secret_rm: tuple[str, ...] = ()
    secret_add: tuple[str, ...] = ()

    def flags(self) -> list[str]:
        """The flags, removals before additions, each with its value."""
        pairs = [
            (f"--{name.replace('_', '-')}", value)
            for name in self.__dataclass_fields__
            for value in getattr(self, name)
        ]
        return [word for pair in pairs for word in pair]


def create_service(
    app: App,
    swarm: Swarm,
    release: str,
    reference: str,
    digest: str,
    secrets: Mapping[str, str],
    *,
    login: Login | None,
) -> RemoteCommand:
    """Create the app's service on *reference* (by digest), forwarding the registry login to the nodes.

    *secrets* maps a file name under /run/secrets/ to the Swarm secret it shows.
    """
    spec = app.container
    argv = [
        "service", "create", "--detach", "--no-resolve-image", "--with-registry-auth",
        "--name", app.name,
        *_release_labels(app, release, digest, "--label"),
        *(["--mode", "global"] if swarm.replicas == "global" else ["--replicas", str(swarm.replicas)]),
        *_service_settings(app, swarm),
    ]  # fmt: skip
    argv += [word for port in spec.ports for word in ("--publish", publish_spec(port))]
    argv += [word for volume in spec.volumes for word in ("--mount", mount_spec(volume))]
    argv += [word for key, value in spec.env.items() for word in ("--env", f"{key}={value}")]
    argv += [word for target, name in secrets.items() for word in ("--secret", secret_spec(name, target))]
    return logged_in("docker service create", [*argv, reference], login)


def update_service(
    app: App,
    swarm: Swarm,
    release: str,
    reference: str,
    digest: str,
    changes: ServiceChanges,
    *,
    login: Login | None,
) -> RemoteCommand:
    """Move the app's service to *reference* (by digest) and the inventory's settings; Swarm rolls the tasks."""
    argv = [
        "service", "update", "--detach", "--no-resolve-image", "--with-registry-auth",
        "--image", reference,
        *_release_labels(app, release, digest, "--label-add"),
        *([] if swarm.replicas == "global" else ["--replicas", str(swarm.replicas)]),
        *_service_settings(app, swarm),
        *changes.flags(),
        app.name,
    ]  # fmt: skip
    return logged_in("docker service update", argv, login)


def revert_service(
    app: App, release: str, reference: str, digest: str, changes: ServiceChanges
) -> RemoteCommand:
    """Move the service back to an earlier release's image and secrets; its nodes still hold the image."""
    return RemoteCommand(
        (
            "docker", "service", "update", "--detach", "--no-resolve-image",
            "--image", reference,
            *_release_labels(app, release, digest, "--label-add"),
            *changes.flags(),
            app.name,
        ),
        purpose="docker service update",
    )  # fmt: skip


def undo_update(app: App) -> RemoteCommand:
    """Have Swarm put the service back on the spec it had before the update in progress."""
    return RemoteCommand(("docker", "service", "rollback", "--detach", app.name))


def remove_service(app: App) -> RemoteCommand:
    """Remove the service (a first release that never became healthy); volumes and secrets stay."""
    return RemoteCommand(("docker", "service", "rm", app.name))


def service_logs(app: App, *, follow: bool, tail: int | None, since: str | None) -> RemoteCommand:
    """What the service's tasks wrote (each line named by Swarm after its task and node), as
    :func:`deployer.commands.follow_logs` reads one container's."""
    options = commands.log_options(follow=follow, tail=tail, since=since)
    return RemoteCommand(("docker", "service", "logs", *options, app.name), purpose="docker service logs")


# ---------------------------------------------------------------- what the manager answers


@dataclass(frozen=True)
class Task:
    """A task of the service, as ``docker service ps`` shows it."""

    node: str
    image: str
    desired: str
    state: str
    since: str
    error: str

    @property
    def digest(self) -> str:
        """The image digest the task runs."""
        return self.image.rpartition("@")[2]

    @property
    def running(self) -> bool:
        """True once the task runs; with a HEALTHCHECK, only once it is healthy."""
        return self.state == "running"


@dataclass(frozen=True)
class Service:
    """The app's service: the release its spec names, and the settings deploy manages."""

    release: str
    digest: str
    replicas: int | None  # None: global
    env: Mapping[str, str]
    ports: frozenset[str]  # as commands.publish_spec writes them
    mounts: Mapping[str, str]  # target -> as commands.mount_spec writes it
    secrets: Mapping[str, str]  # file name under /run/secrets -> secret name
    update: str  # UpdateStatus.State, "" before any update
    message: str


@dataclass(frozen=True)
class ClusterState:
    """The cluster's ready nodes, and the app's service with its tasks when it exists."""

    nodes: tuple[str, ...]
    service: Service | None
    tasks: tuple[Task, ...]

    @property
    def current(self) -> list[Task]:
        """The tasks Swarm wants running, by node."""
        return sorted((t for t in self.tasks if t.desired == "Running"), key=lambda t: t.node)

    @property
    def expected(self) -> int:
        """How many tasks the service should run: its replicas, or one per ready node."""
        if self.service is not None and self.service.replicas is not None:
            return self.service.replicas
        return len(self.nodes)


def _json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            yield item


def parse_cluster(output: str) -> ClusterState:
    """Parse the output of :func:`deployer.commands.read_swarm`."""
    nodes_part, _, rest = output.partition("---\n")
    service_part, _, tasks_part = rest.partition("---\n")
    nodes = tuple(
        str(node.get("Hostname", ""))
        for node in _json_lines(nodes_part)
        if node.get("Status") == "Ready" and node.get("Availability") == "Active"
    )
    services = [_service(item) for item in _json_lines(service_part)]
    return ClusterState(nodes, services[0] if services else None, tuple(map(_task, _json_lines(tasks_part))))


def _task(item: dict[str, Any]) -> Task:
    state, _, since = str(item.get("CurrentState", "")).partition(" ")
    return Task(
        node=str(item.get("Node", "")),
        image=str(item.get("Image", "")),
        desired=str(item.get("DesiredState", "")),
        state=state.lower(),
        since=since.removesuffix(" ago"),
        error=str(item.get("Error", "")).strip('"'),
    )


def _service(item: dict[str, Any]) -> Service:
    spec = item.get("Spec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    labels = spec.get("Labels") or {}
    replicated = (spec.get("Mode") or {}).get("Replicated")
    status = item.get("UpdateStatus") or {}
    return Service(
        release=str(labels.get(RELEASE_LABEL, "")),
        digest=str(container.get("Image", "")).rpartition("@")[2],
        replicas=None if replicated is None else int(replicated.get("Replicas", 0)),
        env=dict(entry.partition("=")[::2] for entry in container.get("Env") or []),
        ports=frozenset(_port(port) for port in (spec.get("EndpointSpec") or {}).get("Ports") or []),
        mounts={mount["Target"]: _mount(mount) for mount in container.get("Mounts") or []},
        secrets={ref["File"]["Name"]: ref["SecretName"] for ref in container.get("Secrets") or []},
        update=str(status.get("State", "")),
        message=str(status.get("Message", "")),
    )


def _port(port: dict[str, Any]) -> str:
    published = f",published={port['PublishedPort']}" if port.get("PublishedPort") else ""
    return (
        f"mode={port.get('PublishMode', 'ingress')},target={port.get('TargetPort')}{published}"
        f",protocol={port.get('Protocol', 'tcp')}"
    )


def _mount(mount: dict[str, Any]) -> str:
    readonly = ",readonly" if mount.get("ReadOnly") else ""
    return f"type={mount.get('Type')},source={mount.get('Source', '')},target={mount.get('Target')}{readonly}"


def secret_key(app: App, *, create: bool = True) -> RemoteCommand:
    """Print the cluster's key for naming secret versions, made at random the first time.

    A version's name carries a keyed hash of the value, so two rollouts with the same value
    share a version, and a name says nothing about the value to whoever lacks the key.
    """
    make = (
        'mkdir -p "$1" && { [ -s "$f" ] || { t=$(mktemp "$1/.key.XXXXXX") && chmod 660 "$t" && '
        'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n" > "$t" && mv "$t" "$f"; }; } || exit 1; '
        if create
        else ""
    )
    return script(
        "read the Swarm secret key",
        'f="$1/swarm-secret-key"; ' + make + 'cat "$f" 2>/dev/null || true',
        state_dir(app),
    )


def secret_names(app: App, values: Mapping[str, SecretStr], key: str) -> dict[str, str]:
    """For each of `app.container.secrets`, the versioned Swarm secret that holds its value."""
    return {target: secret_name(app, target, value, key) for target, value in values.items()}


def secret_targets(app: App, names: list[str]) -> dict[str, str]:
    """The file names under /run/secrets of versioned secret *names* (``<app>-<TARGET>-<8 hex>``)."""
    return {name[len(app.name) + 1 : -9]: name for name in names}


def secret_name(app: App, target: str, value: SecretStr, key: str) -> str:
    """A secret's Swarm name, versioned by a keyed hash of its value (``????????`` without a key)."""
    if not key:
        return f"{app.name}-{target}-????????"
    digest = hmac.new(key.encode(), value.get_secret_value().encode(), hashlib.sha256).hexdigest()
    return f"{app.name}-{target}-{digest[:8]}"
