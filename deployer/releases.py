"""Parse what a host reports about its releases: app containers and the history file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from deployer.commands import DIGEST_LABEL, RELEASE_LABEL


@dataclass(frozen=True)
class Container:
    """One container of the app on a host."""

    name: str
    release: str
    digest: str
    state: str
    created: str

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

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data; ``secrets`` only in a Swarm cluster's entries."""
        data = asdict(self)
        if self.secrets is None:
            del data["secrets"]
        return data

    def to_json(self) -> bytes:
        """The line as written to the history file."""
        return json.dumps(self.to_dict(), sort_keys=True).encode() + b"\n"


@dataclass(frozen=True)
class HostState:
    """Containers and history of the app on one host."""

    containers: tuple[Container, ...]
    history: tuple[Entry, ...]

    @property
    def running(self) -> Container | None:
        """The container serving now, if any."""
        return next((c for c in self.containers if c.running), None)

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
        """Releases in the order they were successfully switched to, oldest first."""
        return [entry.release for entry in self.history if entry.result == "ok"]

    def previous(self) -> str | None:
        """What ran before the current release: the latest activation of another release."""
        current = self.current
        for release in reversed(self.activations()):
            if release != current:
                return release
        return None

    def retained(self, keep: int) -> tuple[list[Container], list[Container]]:
        """Split the stopped containers into the newest *keep* releases to keep and the rest."""
        order = {release: index for index, release in enumerate(self.activations())}
        stopped = [c for c in self.containers if not c.running and c.release != self.current]
        stopped.sort(key=lambda c: (order.get(c.release, -1), c.created), reverse=True)
        return stopped[:keep], stopped[keep:]


def parse_state(output: str) -> HostState:
    """Parse the output of :func:`deployer.commands.read_state`; skip lines it cannot read."""
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
            )
        )
    history = []
    for line in history_part.splitlines():
        try:
            item = json.loads(line)
            history.append(Entry(**{key: item.get(key) for key in Entry.__dataclass_fields__}))
        except (json.JSONDecodeError, TypeError, AttributeError):
            continue
    return HostState(tuple(containers), tuple(history))
