"""Every command `deploy` runs on a host, built as data: nothing here touches the network.

Each function returns a :class:`RemoteCommand`: an argv list, and the bytes sent on its
standard input. Secrets (registry password, container secret values) only ever travel on
standard input, never in argv, so they cannot show in ``ps`` on either side. The few
``sh -c`` scripts take their values as positional parameters, never spliced into the script.

Per-host state lives under ``~/.deploy/<app>/`` (mode 0700): ``lock`` and ``history.jsonl``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from deployer.config import App

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
    purpose: str, script: str, *args: str, stdin: bytes = b"", ok: Sequence[int] = (0,)
) -> RemoteCommand:
    return RemoteCommand(
        ("sh", "-c", script, "sh", *args), stdin=stdin, ok_statuses=frozenset(ok), purpose=purpose
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
    reference: str, *, username: str | None, server: str | None, password: SecretStr | None
) -> RemoteCommand:
    """Pull *reference* (``repo@sha256:…``) unless present; log in only for this pull.

    The credentials go to a temporary Docker config directory that is removed on exit, so
    they are not left readable on the host; the password is read from stdin.
    """
    if password is None or username is None or server is None:
        return _script(
            "docker pull",
            'docker image inspect "$1" >/dev/null 2>&1 && { echo present; exit 0; }; docker pull -q "$1"',
            reference,
        )
    return _script(
        "docker pull",
        'docker image inspect "$1" >/dev/null 2>&1 && { echo present; exit 0; }; '
        "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; "
        'docker --config "$d" login --username "$2" --password-stdin "$3" >/dev/null || exit 1; '
        'docker --config "$d" pull -q "$1"',
        reference,
        username,
        server,
        stdin=password.get_secret_value().encode() + b"\n",
    )


def tag_image(reference: str, tagged: str) -> RemoteCommand:
    """Give the pulled digest a readable local tag."""
    return RemoteCommand(("docker", "image", "tag", reference, tagged))


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
    return RemoteCommand(("docker", "container", "stop", "--time", str(timeout), name))


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
