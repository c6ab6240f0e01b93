"""The commands `deploy` runs on a host for an app's containers and images, built as data.

Each function returns a :class:`RemoteCommand`: an argv list, and the bytes sent on its
standard input. Secrets (registry password, container secret values) only ever travel on
standard input, never in argv, so they cannot show in ``ps`` on either side. The few
``sh -c`` scripts take their values as positional parameters, never spliced into the script.
A command whose output is read sits next to the parser of that output.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from deployer.config import DEFAULT_ROLE, App, Registry, credentials_key

if TYPE_CHECKING:
    from deployer.roles import Role

APP_LABEL = "deployer.app"
RELEASE_LABEL = "deployer.release"
DIGEST_LABEL = "deployer.digest"
#: the role a container runs; absent on the web role's, whose containers predate roles
ROLE_LABEL = "deployer.role"


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
    #: the commands it runs one after the other (see :func:`chain`), as messages show it
    parts: tuple[RemoteCommand, ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """A few words for messages: the purpose, else the docker verb or the program."""
        if self.purpose:
            return self.purpose
        return " ".join(self.argv[: 3 if self.argv[0] == "docker" else 1])

    def render(self) -> str:
        """The command line as the host's login shell receives it."""
        return shlex.join(self.argv)

    def __str__(self) -> str:
        if self.parts:
            return " && ".join(str(part) for part in self.parts)
        return self.render() + (" < (stdin)" if self.stdin else "")


def chain(*parts: RemoteCommand) -> RemoteCommand:
    """*parts* in one round trip: each runs once the one before succeeded, and the first that
    fails ends it with its status. The answer is the last one's output; none reads stdin."""
    if any(part.stdin for part in parts) or any(part.ok_statuses != {0} for part in parts[:-1]):
        raise ValueError("only the last command of a chain may answer with a status other than 0, none reads stdin")
    body = " && ".join([*(f"{part.render()} >/dev/null" for part in parts[:-1]), parts[-1].render()])
    return RemoteCommand(
        ("sh", "-c", body),
        ok_statuses=parts[-1].ok_statuses,
        purpose=", then ".join(part.describe() for part in parts),
        slow=any(part.slow for part in parts),
        waits=sum(part.waits for part in parts),
        interruptible=all(part.interruptible for part in parts),
        parts=parts,
    )


def script(
    purpose: str,
    body: str,
    *args: str,
    stdin: bytes = b"",
    ok: Sequence[int] = (0,),
    slow: bool = False,
    interruptible: bool = False,
    waits: float = 0,
) -> RemoteCommand:
    """``sh -c BODY`` with *args* as its positional parameters (never spliced into the body)."""
    return RemoteCommand(
        ("sh", "-c", body, "sh", *args),
        stdin=stdin,
        ok_statuses=frozenset(ok),
        purpose=purpose,
        slow=slow,
        waits=waits,
        interruptible=interruptible,
    )


def container_name(app: App, release: str, role: str = DEFAULT_ROLE) -> str:
    """The container a release runs in: one per release, so the previous one can be kept.

    ``APP-RELEASE`` for the web role (the names of an app without roles), ``APP-ROLE-RELEASE``
    for any other.
    """
    return f"{app.name}-{release}" if role == DEFAULT_ROLE else f"{app.name}-{role}-{release}"


# ---------------------------------------------------------------- registry login


@dataclass(frozen=True)
class Login:
    """Registry credentials for the length of one command on a host."""

    username: str
    server: str
    password: SecretStr = field(repr=False)

    def docker_config(self) -> bytes:
        """A Docker client configuration holding this login, as ``docker login`` would write it."""
        token = base64.b64encode(f"{self.username}:{self.password.get_secret_value()}".encode()).decode()
        return json.dumps({"auths": {credentials_key(self.server): {"auth": token}}}).encode()


def login_for(registry: Registry | None, password: SecretStr | None) -> Login | None:
    """The login a host needs: only when the inventory names a user and a password is known."""
    if registry is None or registry.username is None or password is None:
        return None
    return Login(registry.username, registry.server, password)


_NO_LOGIN = 'login() { :; }; dk() { docker "$@"; }; '
# The credentials go to a throwaway Docker config directory, removed when the script exits, so
# they are not left readable on the host. The configuration comes on stdin, as `docker login`
# would write it: no `docker login` process, and no round trip to the registry (this machine
# checked the credentials when it read the release's digest; a refused pull says so anyway).
_LOGIN = (
    'd=; trap \'[ -z "$d" ] || rm -rf "$d"\' EXIT; '
    'login() { d=$(mktemp -d) && (umask 077 && cat > "$d/config.json"); }; '
    'dk() { if [ -n "$d" ]; then docker --config "$d" "$@"; else docker "$@"; fi; }; '
)


def docker_script(
    purpose: str, body: str, *args: str, login: Login | None, slow: bool = False, interruptible: bool = False
) -> RemoteCommand:
    """A script whose ``dk`` runs docker and whose ``login`` logs in to the registry, for its length only."""
    if login is None:
        return script(purpose, _NO_LOGIN + body, *args, slow=slow, interruptible=interruptible)
    return script(purpose, _LOGIN + body, *args, stdin=login.docker_config(), slow=slow, interruptible=interruptible)


def logged_in(purpose: str, args: Sequence[str], login: Login | None) -> RemoteCommand:
    """``docker ARGS``, logged in to the registry first when there is a login.

    Given ``ssh.pull_timeout``, as it talks to the registry; never abandoned midway, as it
    changes the service.
    """
    if login is None:
        return RemoteCommand(("docker", *args), purpose=purpose, slow=True)
    return docker_script(purpose, 'login || exit 1; dk "$@"', *args, login=login, slow=True)


# ---------------------------------------------------------------- images


def pull(reference: str, tagged: str, *, login: Login | None, unless_present: bool = True) -> RemoteCommand:
    """Pull *reference* (``repo@sha256:…``) and give it the readable tag *tagged*; *unless_present*,
    first ask whether the host has it (not needed when its state says it lacks it).

    The one kind of command that may take long (``ssh.pull_timeout``); stopping the run abandons it.
    It prints what ``docker pull`` prints without a terminal, a line per change of a layer's
    state (:func:`count_pull`), and nothing when the host has the image already.
    """
    fetch = 'login || exit 1; dk pull "$1" || exit 1; '
    if unless_present:
        fetch = f'dk image inspect "$1" >/dev/null 2>&1 || {{ {fetch}}}; '
    return docker_script(
        "docker pull", fetch + 'dk image tag "$1" "$2"', reference, tagged, login=login, slow=True, interruptible=True
    )


def tag(reference: str, tagged: str) -> RemoteCommand:
    """Give the image *reference*, which the host has, the readable tag *tagged*."""
    return RemoteCommand(("docker", "image", "tag", reference, tagged))


def pull_forwarded(registry: str, image: str, digest: str, tagged: str) -> RemoteCommand:
    """Pull *image* at *digest* from *registry* (``127.0.0.1:PORT``: this machine's registry,
    forwarded to the host's loopback, which Docker trusts without TLS), name it *tagged*, and
    forget the name that carries the port, whatever happened: a later run forwards another port.

    Always pulled: an image the host holds costs one manifest; its layers are not sent again.
    The one kind of command that may take long (``ssh.pull_timeout``); stopping the run abandons it.
    It prints what ``docker pull`` prints without a terminal, as :func:`pull` does, so the live
    view counts the layers as they arrive; through a reader that keeps draining it once the
    connection is gone, so that an abandoned pull still ends, and its name with the port goes.
    """
    return script(
        "docker pull",
        'r="$1/$2@$3"; f=$(mktemp) || exit 1; '
        '{ docker pull "$r"; echo $? > "$f"; } | { cat; cat >/dev/null; }; '
        's=$(cat "$f"); rm -f "$f"; [ "$s" = 0 ] || exit 1; '
        'docker image tag "$r" "$4"; s=$?; docker image rm "$r" >/dev/null; exit $s',
        registry,
        image,
        digest,
        tagged,
        slow=True,
        interruptible=True,
    )


#: ``<12 hex digits>: <state>``: a layer's state, as ``docker pull`` prints it without a terminal
_PULL_LINE = re.compile(r"^([0-9a-f]{12}): (.+)$")
#: the states that end a layer's pull
LAYER_DONE = frozenset({"Pull complete", "Already exists"})


def parse_pull_line(line: str) -> tuple[str, str] | None:
    """The layer and its new state from one line :func:`pull` prints (``3f640debe6e6: Pull
    complete``); None for the other lines (``Digest: …``, ``Status: …``, the reference).

    Without a terminal, ``docker pull`` prints a line each time a layer changes state (``Pulling
    fs layer``, ``Waiting``, ``Verifying Checksum``, ``Download complete``, ``Pull complete``, or
    ``Already exists`` for a layer the host has) and leaves out the byte counts of ``Downloading``
    and ``Extracting``. The first line names the tag or digest being pulled, never a layer.
    """
    match = _PULL_LINE.match(line.strip())
    if match is None or match.group(2).startswith("Pulling from "):
        return None
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class PullCount:
    """How far a pull is, from the lines it printed so far: the layers named, the layers done."""

    layers: tuple[str, ...] = ()
    finished: frozenset[str] = frozenset()

    @property
    def total(self) -> int:
        """Layers the image has, as far as the pull has named them."""
        return len(self.layers)

    @property
    def done(self) -> int:
        """Layers pulled, or found on the host already."""
        return len(self.finished)

    def add(self, line: str) -> PullCount:
        """The count after one more line of output (itself when the line names no layer)."""
        parsed = parse_pull_line(line)
        if parsed is None:
            return self
        layer, state = parsed
        layers = self.layers if layer in self.layers else (*self.layers, layer)
        finished = self.finished | {layer} if state in LAYER_DONE else self.finished
        return PullCount(layers, finished)


def count_pull(output: str) -> PullCount:
    """The count of a whole pull's output."""
    count = PullCount()
    for line in output.splitlines():
        count = count.add(line)
    return count


def remove_images(references: Sequence[str]) -> RemoteCommand:
    """Remove images no kept container uses; images still in use are left alone."""
    return RemoteCommand(("docker", "image", "rm", *references), ok_statuses=frozenset({0, 1}))


# ---------------------------------------------------------------- containers


def create_container(
    app: App,
    release: str,
    reference: str,
    digest: str,
    secrets: Mapping[str, SecretStr],
    *,
    network: str | None = None,
    role: Role | None = None,
) -> RemoteCommand:
    """Create (not start) the release's container with the inventory's ports, env, volumes,
    on *network* when given; for *role*, with the role's settings, label and command (a role
    without a health check has the image's HEALTHCHECK turned off).

    Secret values never touch a file, nor an argv: stdin carries one base64 line per secret, in the
    order their names follow ``sh`` in argv (up to ``--``). The script decodes each value into its
    own environment and runs ``docker create --env NAME``, which takes the value from there. So a
    value may hold newlines, ``=`` or anything else but NUL, and arrives byte for byte.
    """
    spec = app.container if role is None else role.container
    argv = [
        "docker", "create",
        "--name", container_name(app, release, DEFAULT_ROLE if role is None else role.name),
        "--label", f"{APP_LABEL}={app.name}",
        "--label", f"{RELEASE_LABEL}={release}",
        "--label", f"{DIGEST_LABEL}={digest}",
        "--restart", spec.restart,
        "--stop-timeout", str(spec.stop_timeout),
    ]  # fmt: skip
    if role is not None and not role.default:
        argv += ["--label", f"{ROLE_LABEL}={role.name}"]
    if role is not None and role.healthcheck is None:
        argv.append("--no-healthcheck")
    if spec.init:
        argv.append("--init")
    if network is not None:
        argv += ["--network", network]
    for port in spec.ports:
        argv += ["--publish", port]
    for volume in spec.volumes:
        argv += ["--volume", volume]
    for key, value in spec.env.items():
        argv += ["--env", f"{key}={value}"]
    command = role.cmd if role is not None and role.cmd is not None else ()
    return with_secrets("docker create", argv, [reference, *command], secrets)


def with_secrets(
    purpose: str, argv: list[str], tail: Sequence[str], secrets: Mapping[str, SecretStr]
) -> RemoteCommand:
    """``ARGV TAIL`` (a ``docker create`` or ``docker run``), given *secrets* by name only: each
    value travels base64-encoded on stdin, into the environment of the docker command."""
    if not secrets:
        return RemoteCommand((*argv, *tail), purpose=purpose)
    argv = [*argv]
    for name in secrets:
        argv += ["--env", name]
    values = b"".join(
        base64.b64encode(value.get_secret_value().encode()) + b"\n" for value in secrets.values()
    )
    body = _SECRETS_SCRIPT[argv[1]]
    return script(purpose, body, *secrets, "--", *argv[2:], *tail, stdin=values)


#: read one base64 line per name before ``--`` and export it; a trailing newline of a value survives
#: the command substitution because of the ``.`` appended there and removed after
_READ_SECRETS = (
    'while [ "$1" != -- ]; do '
    "IFS= read -r v || exit 1; "
    'v=$(printf "%s\\n" "$v" | base64 -d && echo .) || exit 1; '
    'export "$1=${v%.}" || exit 1; '
    "shift; "
    "done; "
)
_SECRETS_SCRIPT = {verb: _READ_SECRETS + f'shift; exec docker {verb} "$@"' for verb in ("create", "run")}


# ---------------------------------------------------------------- one-off containers, exec, logs

#: the label of one-off containers (``deploy run``, hooks): the app's name, but not ``deployer.app``,
#: so that they never count as a release's container
ONE_OFF_LABEL = "deployer.one-off"


def one_off_name(app: App, token: str) -> str:
    """The name of a one-off container: known in advance, so it can be removed on Ctrl-C."""
    return f"{app.name}-run-{token}"


def one_off(
    app: App,
    name: str,
    reference: str,
    command: Sequence[str],
    secrets: Mapping[str, SecretStr],
    *,
    network: str | None = None,
) -> RemoteCommand:
    """Run *command* once in a new container of the image *reference*, with the app's env, secrets
    and volumes (no ports: the release may be serving them), and remove the container afterwards.

    The command replaces the image's ENTRYPOINT (its first word becomes ``--entrypoint``), so it
    runs as written, whatever program the image starts by default, as ``docker exec`` would run it.

    Secrets reach it as they reach a release's container (:func:`create_container`): by name in
    argv, by value on stdin only. The container reads no stdin itself.
    """
    spec = app.container
    argv = ["docker", "run", "--rm", "--name", name, "--label", f"{ONE_OFF_LABEL}={app.name}"]
    if spec.init:
        argv.append("--init")
    if network is not None:
        argv += ["--network", network]
    for volume in spec.volumes:
        argv += ["--volume", volume]
    for key, value in spec.env.items():
        argv += ["--env", f"{key}={value}"]
    program, *arguments = command
    argv += ["--entrypoint", program]
    return with_secrets("docker run", argv, [reference, *arguments], secrets)


def hook_argv(command: Sequence[str] | str) -> list[str]:
    """The argv of a hook command: a list as is, a string through ``sh -c``."""
    return ["sh", "-c", command] if isinstance(command, str) else list(command)


def kill_container(name: str) -> RemoteCommand:
    """Stop and remove a container at once (a one-off container whose run was stopped)."""
    return RemoteCommand(
        ("docker", "container", "rm", "--force", name), ok_statuses=frozenset({0, 1}), purpose="remove the container"
    )


def exec_in(container: str, command: Sequence[str], *, terminal: bool = False) -> RemoteCommand:
    """Run *command* in a running container; with *terminal*, interactively on a TTY (``-it``)."""
    flags = ("--interactive", "--tty") if terminal else ()
    return RemoteCommand(("docker", "container", "exec", *flags, container, *command), purpose="docker exec")


def log_options(*, follow: bool, tail: int | None, since: str | None) -> tuple[str, ...]:
    """The options of ``docker logs`` (and ``docker service logs``) that pick which lines."""
    return (
        *(("--follow",) if follow else ()),
        *(("--tail", str(tail)) if tail is not None else ()),
        *(("--since", since) if since is not None else ()),
    )


def follow_logs(container: str, *, follow: bool, tail: int | None, since: str | None) -> RemoteCommand:
    """What a container wrote (both streams), its last *tail* lines (all when None), since *since*,
    and with *follow* what it writes next, until stopped."""
    options = log_options(follow=follow, tail=tail, since=since)
    return RemoteCommand(("docker", "container", "logs", *options, container), purpose="docker logs")


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


def logs(name: str, lines: int = 20) -> RemoteCommand:
    """The last lines a container wrote, to explain a failed health check."""
    return RemoteCommand(("docker", "container", "logs", "--tail", str(lines), name))


# ---------------------------------------------------------------- container facts


INSPECT_FORMAT = (
    "{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|"
    "{{if .State.Health}}{{.State.Health.Status}}{{end}}|"
    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}|{{.State.StartedAt}}"
)


def inspect(name: str) -> RemoteCommand:
    """State, exit code, restarts, Docker health, addresses and start time of a container."""
    return RemoteCommand(("docker", "container", "inspect", "--format", INSPECT_FORMAT, name))


@dataclass(frozen=True)
class ContainerInfo:
    """What :func:`inspect` says about a release's container."""

    status: str
    exit_code: int
    restarts: int
    health: str
    addresses: tuple[str, ...]
    started_at: str

    @property
    def crashed(self) -> bool:
        """True once the container stopped or was restarted by its policy."""
        return self.status in ("exited", "dead") or self.restarts > 0


def parse_inspect(output: str) -> ContainerInfo:
    """Parse the output of :func:`inspect`."""
    status, exit_code, restarts, health, addresses, started = (output.strip().split("|") + [""] * 6)[:6]
    return ContainerInfo(
        status=status,
        exit_code=int(exit_code or 0),
        restarts=int(restarts or 0),
        health=health,
        addresses=tuple(addresses.split()),
        started_at=started,
    )


def http_probe(url: str, timeout: float) -> RemoteCommand:
    """Ask *url*, exactly one URL, from the host itself; prints the 3-digit status (000 when no answer).

    ``--globoff``: ``{a,b}`` or ``[1-9]`` in the path would make curl fetch several URLs and print
    a status for each. Anything but three digits is printed as 000.
    """
    return script(
        "health probe",
        'c=$(curl --globoff --silent --output /dev/null --write-out "%{http_code}" --max-time "$2" "$1"); '
        'case "$c" in [0-9][0-9][0-9]) printf %s "$c" ;; *) printf 000 ;; esac',
        url,
        f"{timeout:g}",
        ok=range(256),
    )


def health_url(info: ContainerInfo, port: int, path: str) -> str:
    """Where the host asks for health: the container's own address, so no port needs publishing."""
    address = info.addresses[0] if info.addresses else "127.0.0.1"
    return f"http://{address}:{port}{path}"


# ---------------------------------------------------------------- host facts


@dataclass(frozen=True)
class HostFacts:
    """What `deploy setup` checks on a host: the Docker engine and the free disk."""

    docker: str
    free_bytes: int


def host_facts() -> RemoteCommand:
    """The Docker engine's version (empty when it does not answer) and the free disk of its data root."""
    return script(
        "read the host's engine and disk",
        "docker version --format '{{.Server.Version}}' 2>/dev/null || echo; "
        "df -Pk \"$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo /)\" | tail -n 1",
    )


def parse_host_facts(output: str) -> HostFacts:
    """Parse the output of :func:`host_facts`: a version line, then a ``df -P`` line in KiB."""
    version, _, disk = output.partition("\n")
    fields = disk.split()
    free = int(fields[3]) * 1024 if len(fields) > 3 and fields[3].isdigit() else 0
    return HostFacts(version.strip(), free)
