"""What a host keeps about an app, next to the commands that read and write it.

Per-host state lives in ``/var/lib/deploy/apps/<app>/``, one place for every user who deploys
there (files mode 0660: the users share a group, see docs/security.md): ``lock`` (who runs
now) and ``history.jsonl`` (one JSON line per switch). A history kept by an earlier version in
the login user's ``~/.deploy/<app>/`` is read, and carried over on the next write. The app's
containers carry the release and digest in their labels, so ``read_state`` reads both in one
round trip.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from deployer.commands import APP_LABEL, DIGEST_LABEL, RELEASE_LABEL, ROLE_LABEL, RemoteCommand, script
from deployer.config import DEFAULT_ROLE, App

STATE_ROOT = "/var/lib/deploy/apps"
#: where versions before 0.2 kept the state, in the login user's home
LEGACY_ROOT = ".deploy"

#: exit status of :func:`acquire_lock` when another run holds the lock
LOCK_HELD = 3
#: how history lines about accessories begin (``accessory boot``...): they switch no release
ACCESSORY_ACTION = "accessory "


def state_dir(app: App) -> str:
    """Where the host keeps this app's lock and history, for every user."""
    return f"{STATE_ROOT}/{app.name}"


def _legacy_history(app: App) -> str:
    return f"{LEGACY_ROOT}/{app.name}/history.jsonl"


#: create the state directory, or say what to do when the login user may not
_MAKE_DIR = (
    'umask 007; mkdir -p "$1" 2>/dev/null || { echo "cannot create $1: create it once as root: '
    'install -d -m 2770 -g docker $(dirname "$1")" >&2; exit 1; }; '
)


#: print the containers labelled "$2", a "---" line, then the history "$3" (else the legacy "$4")
_READ_STATE = (
    'docker container ls --all --no-trunc --filter "label=$2" --format "{{json .}}" || exit 1; '
    'echo "---"; if [ -f "$3" ]; then cat "$3"; else cat "$4" 2>/dev/null || true; fi'
)


def _state_args(app: App) -> tuple[str, str, str, str]:
    """The positional parameters of the scripts that read the state."""
    return (state_dir(app), f"{APP_LABEL}={app.name}", f"{state_dir(app)}/history.jsonl", _legacy_history(app))


# ---------------------------------------------------------------- the lock


@dataclass(frozen=True)
class LockRecord:
    """Who holds a host's deploy lock, since when, for what."""

    token: str
    by: str
    machine: str
    pid: int
    since: str
    command: str
    #: when the run began (seconds since the epoch); orders two runs that contend for hosts
    started: float = 0.0

    def to_json(self) -> bytes:
        """The lock file's content."""
        return json.dumps(self.__dict__, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, text: str) -> LockRecord | None:
        """Read a lock file (the output of :func:`acquire_lock` when held); None when not ours.
        A lock written before ``started`` existed reads as the oldest run."""
        try:
            data = json.loads(text)
            return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data or key != "started"})
        except (json.JSONDecodeError, KeyError, TypeError):
            return None

    def precedes(self, other: LockRecord) -> bool:
        """Of two runs that each locked some of the hosts the other needs, the one that goes on:
        the earlier started (the token breaks a tie), so both decide the same way."""
        return (self.started, self.token) < (other.started, other.token)


def acquire_lock(app: App, record: bytes, *, break_first: bool = False) -> RemoteCommand:
    """Take the lock with *record* and print the app's state (as :func:`read_state`), in one
    round trip; exit LOCK_HELD and print the holder's record instead if another run holds it.
    *break_first* removes any lock first, whoever holds it."""
    return script(
        "take the lock and read containers and history",
        _MAKE_DIR + '[ -z "$5" ] || rm -f "$1/lock"; '
        # Written aside, then linked into place: a full disk cannot leave a half-written lock,
        # and of two runs only one link succeeds.
        't=$(mktemp "$1/.lock.XXXXXX") || exit 1; trap \'rm -f "$t"\' EXIT; chmod 660 "$t"; '
        'cat > "$t" || exit 1; if ! ln "$t" "$1/lock" 2>/dev/null; then '
        '[ -e "$1/lock" ] || exit 1; cat "$1/lock"; exit 3; fi; ' + _READ_STATE,
        *_state_args(app),
        "break" if break_first else "",
        stdin=record,
        ok=(0, LOCK_HELD),
    )


def release_lock(app: App, token: str) -> RemoteCommand:
    """Remove the lock, only if it still carries this run's *token*."""
    return script(
        "release the deploy lock",
        'if grep -qF -- "$2" "$1" 2>/dev/null; then rm -f "$1"; fi',
        f"{state_dir(app)}/lock",
        token,
    )


# ---------------------------------------------------------------- containers and history


@dataclass(frozen=True)
class Container:
    """One container of the app on a host."""

    name: str
    release: str
    digest: str
    state: str
    created: str
    #: the role it runs (containers without a role label are the web role's)
    role: str = DEFAULT_ROLE

    @property
    def running(self) -> bool:
        """True while the container runs (or restarts)."""
        return self.state in ("running", "restarting")


@dataclass(frozen=True)
class Entry:
    """One line of a host's release history."""

    time: str
    action: str
    release: str
    digest: str
    by: str
    result: str
    previous: str | None = None
    #: the Swarm secrets the release runs with (on a Swarm cluster only)
    secrets: list[str] | None = None
    #: the role switched, for a role other than web (lines without one are the web role's)
    role: str | None = None
    #: the command a one-off container ran (``run``, ``before_switch``), whose result is its exit
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data; ``secrets`` only in a Swarm cluster's entries, ``role``
        only for a role other than web, ``command`` only in a one-off container's."""
        data = asdict(self)
        for key in ("secrets", "role", "command"):
            if data[key] is None:
                del data[key]
        return data

    @property
    def role_name(self) -> str:
        """The role the line is about."""
        return self.role or DEFAULT_ROLE

    def to_json(self) -> bytes:
        """The line as written to the history file."""
        return json.dumps(self.to_dict(), sort_keys=True).encode() + b"\n"


@dataclass(frozen=True)
class HostState:
    """Containers and history of the app on one host."""

    containers: tuple[Container, ...]
    history: tuple[Entry, ...]
    #: history lines that could not be read
    unreadable: int = 0

    def of_role(self, role: str) -> HostState:
        """The state of one role: its containers and its history lines only."""
        return HostState(
            tuple(c for c in self.containers if c.role == role),
            tuple(e for e in self.history if e.role_name == role),
            self.unreadable,
        )

    @property
    def roles(self) -> list[str]:
        """The roles the host has containers of, in the order they were found."""
        return list(dict.fromkeys(c.role for c in self.containers))

    @property
    def running(self) -> Container | None:
        """The container serving now, if any."""
        return next((c for c in self.containers if c.running), None)

    def holds(self, digest: str) -> bool:
        """True when a container of the app (any role) was made from the image at *digest*: the
        host has that image."""
        return any(c.digest == digest for c in self.containers)

    def container(self, release: str) -> Container | None:
        """The kept container of *release*, if the host still has it."""
        return next((c for c in self.containers if c.release == release), None)

    @property
    def current(self) -> str | None:
        """The release this host serves: the running container's, else the last one switched to."""
        if self.running is not None:
            return self.running.release
        switched = self.activations()
        return switched[-1] if switched else None

    def activations(self) -> list[str]:
        """Releases in the order they were successfully switched to, oldest first.

        A switch that a later failure on another host put back (a ``reverted`` line right after
        its ``ok`` line) does not count.
        """
        switched: list[str] = []
        for entry in self.history:
            if entry.action.startswith(ACCESSORY_ACTION):
                continue  # an accessory's boot, reboot or removal: no release was switched
            if entry.result == "ok":
                switched.append(entry.release)
            elif entry.result == "reverted" and switched[-1:] == [entry.release]:
                switched.pop()
        return switched

    def previous(self) -> str | None:
        """What ran before the current release: the latest activation of another release."""
        current = self.current
        for release in reversed(self.activations()):
            if release != current:
                return release
        return None

    def retained(self, keep: int) -> tuple[list[Container], list[Container]]:
        """Split the stopped containers into the newest *keep* releases to keep and the rest.

        The release a rollback would go to is always kept, whatever the history says.
        """
        order = {release: index for index, release in enumerate(self.activations())}
        stopped = [c for c in self.containers if not c.running and c.release != self.current]
        stopped.sort(
            key=lambda c: (c.release == self.previous(), order.get(c.release, -1), c.created), reverse=True
        )
        return stopped[:keep], stopped[keep:]


def read_state(app: App) -> RemoteCommand:
    """Print the history file (may be absent) after the app's containers, one JSON object a line."""
    return script("read containers and history", _READ_STATE, *_state_args(app))


def parse_state(output: str) -> HostState:
    """Parse the output of :func:`read_state`; skip lines it cannot read."""
    containers_part, _, history_part = output.partition("---\n")
    containers = []
    for line in containers_part.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        labels = dict(pair.split("=", 1) for pair in str(item.get("Labels", "")).split(",") if "=" in pair)
        containers.append(
            Container(
                name=str(item.get("Names", "")),
                release=labels.get(RELEASE_LABEL, ""),
                digest=labels.get(DIGEST_LABEL, ""),
                state=str(item.get("State", "")),
                created=str(item.get("CreatedAt", "")),
                role=labels.get(ROLE_LABEL) or DEFAULT_ROLE,
            )
        )
    history = []
    unreadable = 0
    for line in history_part.splitlines():
        try:
            item = json.loads(line)
            history.append(Entry(**{key: item.get(key) for key in Entry.__dataclass_fields__}))
        except (json.JSONDecodeError, TypeError, AttributeError):
            unreadable += bool(line.strip())
    return HostState(tuple(containers), tuple(history), unreadable)


def append_history(app: App, line: bytes) -> RemoteCommand:
    """Add one JSON line to the host's release history (file mode 0660), all or nothing.

    The history is copied with the line added, then renamed over the old file: a full disk
    fails the command and leaves the history as it was, never with half a line.
    """
    return script(
        "record history",
        _MAKE_DIR + 'h="$1/history.jsonl"; t=$(mktemp "$1/.history.XXXXXX") || exit 1; '
        "trap 'rm -f \"$t\"' EXIT; chmod 660 \"$t\"; "
        # Before the first write here, the history an earlier version kept in the home goes first.
        'src="$h"; [ -f "$h" ] || src="$2"; '
        '{ if [ -f "$src" ]; then cat "$src" || exit 1; [ -z "$(tail -c 1 "$src")" ] || echo; fi; cat || exit 1; } '
        '> "$t" || exit 1; mv -f "$t" "$h"',
        state_dir(app),
        _legacy_history(app),
        stdin=line,
    )
