"""Every command `deploy` runs on a host, built as data: nothing here touches the network.

Each function returns a :class:`RemoteCommand`: an argv list, and the bytes sent on its
standard input. Secrets (registry password, container secret values) only ever travel on
standard input, never in argv, so they cannot show in ``ps`` on either side. The few
``sh -c`` scripts take their values as positional parameters, never spliced into the script.

Per-host state lives under ``~/.deploy/<app>/`` (mode 0700): ``lock`` and ``history.jsonl``.
The last section builds what a Swarm cluster's manager runs for the app's service.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from deployer.config import App, Swarm

STATE_ROOT = ".deploy"
APP_LABEL = "deployer.app"
RELEASE_LABEL = "deployer.release"
DIGEST_LABEL = "deployer.digest"

#: exit status of :func:`acquire_lock` when another run holds the lock
LOCK_HELD = 3


@dataclass(frozen=True)
class RemoteCommand:
    """One command for a host: argv, and what is written to its stdin (never shown)."""

    argv: tuple[str, ...]
    stdin: bytes = field(default=b"", repr=False)
    #: exit statuses that are answers rather than failures
    ok_statuses: frozenset[int] = frozenset({0})
    #: what the command does, for messages ("pull", "lock"); defaults to the argv's verb
    purpose: str = ""
    #: a pull: given ``ssh.pull_timeout`` instead of the short ``ssh.command_timeout``
    slow: bool = False
    #: seconds the command waits on purpose (``docker stop --time``), added to its deadline
    waits: float = 0
    #: stopping the run may abandon it midway: all it changes is the host's image store
    interruptible: bool = False

    def describe(self) -> str:
        """A few words for messages: the purpose, else the docker verb or the program."""
        if self.purpose:
            return self.purpose
        return " ".join(self.argv[: 3 if self.argv[0] == "docker" else 1])

    def render(self) -> str:
        """The command line as the host's login shell receives it."""
        return shlex.join(self.argv)

    def __str__(self) -> str:
        return self.render() + (" < (stdin)" if self.stdin else "")


def _script(
    purpose: str,
    script: str,
    *args: str,
    stdin: bytes = b"",
    ok: Sequence[int] = (0,),
    slow: bool = False,
    interruptible: bool = False,
) -> RemoteCommand:
    return RemoteCommand(
        ("sh", "-c", script, "sh", *args),
        stdin=stdin,
        ok_statuses=frozenset(ok),
        purpose=purpose,
        slow=slow,
        interruptible=interruptible,
    )


def state_dir(app: App) -> str:
    """Where the host keeps this app's lock and history, relative to the login home."""
    return f"{STATE_ROOT}/{app.name}"


def container_name(app: App, release: str) -> str:
    """The container a release runs in: one per release, so the previous one can be kept."""
    return f"{app.name}-{release}"


# ---------------------------------------------------------------- state: lock and history


def acquire_lock(app: App, record: bytes) -> RemoteCommand:
    """Create the lock file with *record*; exit LOCK_HELD and print the holder's record if it exists."""
    return _script(
        "take the deploy lock",
        'umask 077; mkdir -p "$1" || exit 1; set -C; '
        'if cat > "$1/lock" 2>/dev/null; then exit 0; fi; cat "$1/lock"; exit 3',
        state_dir(app),
        stdin=record,
        ok=(0, LOCK_HELD),
    )


def release_lock(app: App, token: str) -> RemoteCommand:
    """Remove the lock, only if it still carries this run's *token*."""
    return _script(
        "release the deploy lock",
        'if grep -qF -- "$2" "$1" 2>/dev/null; then rm -f "$1"; fi',
        f"{state_dir(app)}/lock",
        token,
    )


def break_lock(app: App) -> RemoteCommand:
    """Remove the lock whoever holds it."""
    return RemoteCommand(("rm", "-f", f"{state_dir(app)}/lock"))


def read_state(app: App) -> RemoteCommand:
    """Print the history file (may be absent) after the app's containers, one JSON object a line."""
    return _script(
        "read containers and history",
        'docker container ls --all --no-trunc --filter "label=$1" --format "{{json .}}" || exit 1; '
        'echo "---"; cat "$2" 2>/dev/null || true',
        f"{APP_LABEL}={app.name}",
        f"{state_dir(app)}/history.jsonl",
    )


def append_history(app: App, line: bytes) -> RemoteCommand:
    """Append one JSON line to the host's release history (file mode 0600)."""
    return _script(
        "record history", 'umask 077; mkdir -p "$1" && cat >> "$1/history.jsonl"', state_dir(app), stdin=line
    )


# ---------------------------------------------------------------- images


def pull(
    reference: str, tagged: str, *, username: str | None, server: str | None, password: SecretStr | None
) -> RemoteCommand:
    """Pull *reference* (``repo@sha256:…``) unless present, and give it the readable tag *tagged*.

    The one kind of command that may take long (``ssh.pull_timeout``); stopping the run abandons it.

    Logging in happens only for this pull: the credentials go to a temporary Docker config
    directory that is removed on exit, so they are not left readable on the host; the password
    is read from stdin.
    """
    present = 'docker image inspect "$1" >/dev/null 2>&1 || '
    tag = '; docker image tag "$1" "$2"'
    if password is None or username is None or server is None:
        return _script(
            "docker pull", present + 'docker pull -q "$1" >/dev/null || exit 1' + tag, reference, tagged,
            slow=True, interruptible=True,
        )  # fmt: skip
    return _script(
        "docker pull",
        present + "{ "
        "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; "
        'docker --config "$d" login --username "$3" --password-stdin "$4" >/dev/null || exit 1; '
        'docker --config "$d" pull -q "$1" >/dev/null || exit 1; }' + tag,
        reference,
        tagged,
        username,
        server,
        stdin=password.get_secret_value().encode() + b"\n",
        slow=True,
        interruptible=True,
    )


def remove_images(references: Sequence[str]) -> RemoteCommand:
    """Remove images no kept container uses; images still in use are left alone."""
    return RemoteCommand(("docker", "image", "rm", *references), ok_statuses=frozenset({0, 1}))


# ---------------------------------------------------------------- containers


def create_container(
    app: App, release: str, reference: str, digest: str, secrets: Mapping[str, SecretStr]
) -> RemoteCommand:
    """Create (not start) the release's container with the inventory's ports, env, volumes.

    Secret values are written to a mode-0600 env file read from stdin and removed as soon as
    ``docker create`` has read it.
    """
    spec = app.container
    argv = [
        "docker", "create",
        "--name", container_name(app, release),
        "--label", f"{APP_LABEL}={app.name}",
        "--label", f"{RELEASE_LABEL}={release}",
        "--label", f"{DIGEST_LABEL}={digest}",
        "--restart", spec.restart,
        "--stop-timeout", str(spec.stop_timeout),
    ]  # fmt: skip
    if spec.init:
        argv.append("--init")
    for port in spec.ports:
        argv += ["--publish", port]
    for volume in spec.volumes:
        argv += ["--volume", volume]
    for key, value in spec.env.items():
        argv += ["--env", f"{key}={value}"]
    if not secrets:
        return RemoteCommand((*argv, reference), purpose="docker create")
    env_file = "".join(f"{name}={value.get_secret_value()}\n" for name, value in secrets.items())
    return _script(
        "docker create",
        'umask 077; f=$(mktemp) || exit 1; trap \'rm -f "$f"\' EXIT; cat > "$f" || exit 1; '
        'docker create --env-file "$f" "$@"',
        *argv[2:],
        reference,
        stdin=env_file.encode(),
    )


def remove_container(name: str) -> RemoteCommand:
    """Remove a stopped container left from an earlier attempt (never its volumes)."""
    return RemoteCommand(("docker", "container", "rm", name), ok_statuses=frozenset({0, 1}))


def start(name: str) -> RemoteCommand:
    """Start a created or stopped container."""
    return RemoteCommand(("docker", "container", "start", name))


def stop(name: str, timeout: int) -> RemoteCommand:
    """Stop a container, keeping it for rollback."""
    return RemoteCommand(("docker", "container", "stop", "--time", str(timeout), name), waits=timeout)


def remove_containers(names: Sequence[str]) -> RemoteCommand:
    """Remove old releases' containers. Volumes are never removed (no ``-v``)."""
    return RemoteCommand(("docker", "container", "rm", *names))


INSPECT_FORMAT = (
    "{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|"
    "{{if .State.Health}}{{.State.Health.Status}}{{end}}|"
    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}|{{.State.StartedAt}}"
)


def inspect(name: str) -> RemoteCommand:
    """State, exit code, restarts, Docker health, addresses and start time of a container."""
    return RemoteCommand(("docker", "container", "inspect", "--format", INSPECT_FORMAT, name))


def logs(name: str, lines: int = 20) -> RemoteCommand:
    """The last lines a container wrote, to explain a failed health check."""
    return RemoteCommand(("docker", "container", "logs", "--tail", str(lines), name))


def http_probe(url: str, timeout: float) -> RemoteCommand:
    """Ask *url* from the host itself; prints the HTTP status code (000 when no answer)."""
    return RemoteCommand(
        ("curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
         "--max-time", f"{timeout:g}", url),
        ok_statuses=frozenset(range(256)),
    )  # fmt: skip


# ---------------------------------------------------------------- swarm: run on a cluster's manager
#
# A Swarm cluster runs the app as one service named after it; only a manager is reached, and
# Swarm's own update machinery replaces the tasks. The service carries the release labels.


def read_swarm(app: App) -> RemoteCommand:
    """The nodes, then the service and its tasks when the service exists: JSON lines, ``---`` between."""
    return _script(
        "read the Swarm service",
        'docker node ls --format "{{json .}}" || exit 1; echo "---"; '
        'docker service inspect "$1" >/dev/null 2>&1 || exit 0; '
        'docker service inspect --format "{{json .}}" "$1" || exit 1; echo "---"; '
        'docker service ps --no-trunc --format "{{json .}}" "$1"',
        app.name,
    )


def secret_name(app: App, target: str, value: SecretStr) -> str:
    """A secret's Swarm name, versioned by its value: a release keeps the secrets it was started with."""
    return f"{app.name}-{target}-{hashlib.sha256(value.get_secret_value().encode()).hexdigest()[:8]}"


def create_secret(app: App, name: str, value: SecretStr) -> RemoteCommand:
    """Create the Swarm secret *name* from stdin, unless it exists (the name versions the value)."""
    return _script(
        "create a Swarm secret",
        'docker secret inspect "$1" >/dev/null 2>&1 </dev/null && exit 0; '
        'docker secret create --label "$2" "$1" - >/dev/null',
        name,
        f"{APP_LABEL}={app.name}",
        stdin=value.get_secret_value().encode(),
    )


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


def _logged_in(
    purpose: str, args: Sequence[str], username: str | None, server: str | None, password: SecretStr | None
) -> RemoteCommand:
    """``docker ARGS``, logged in to the registry in a throwaway config directory when a password is given.

    Given ``ssh.pull_timeout``, as it talks to the registry; never abandoned midway, as it changes the service.
    """
    if password is None or username is None or server is None:
        return RemoteCommand(("docker", *args), purpose=purpose, slow=True)
    return _script(
        purpose,
        "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; "
        'docker --config "$d" login --username "$1" --password-stdin "$2" >/dev/null || exit 1; '
        'shift 2; docker --config "$d" "$@"',
        username,
        server,
        *args,
        stdin=password.get_secret_value().encode() + b"\n",
        slow=True,
    )


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
    username: str | None,
    server: str | None,
    password: SecretStr | None,
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
    return _logged_in("docker service create", [*argv, reference], username, server, password)


def update_service(
    app: App,
    swarm: Swarm,
    release: str,
    reference: str,
    digest: str,
    changes: ServiceChanges,
    *,
    username: str | None,
    server: str | None,
    password: SecretStr | None,
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
    return _logged_in("docker service update", argv, username, server, password)


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
