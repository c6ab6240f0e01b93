"""What a run tells the user per host: the outcome of a switch, and a status row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: what a run did on one host
Outcome = Literal["switched", "unchanged", "failed", "reverted", "unreachable", "untouched"]
FAILED: frozenset[Outcome] = frozenset({"failed", "reverted", "unreachable"})


@dataclass
class HostReport:
    """What happened on one host, and what it serves now."""

    host: str
    outcome: Outcome
    serving: str | None
    detail: str = ""


@dataclass
class Report:
    """The per-host result of a run."""

    action: str
    release: str | None
    hosts: list[HostReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no host failed."""
        return all(h.outcome not in FAILED for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "action": self.action,
            "release": self.release,
            "ok": self.ok,
            "hosts": [asdict(h) for h in self.hosts],
        }


@dataclass(frozen=True)
class StatusRow:
    """One line of `deploy status`: a plain host, or a task of a Swarm service."""

    host: str
    release: str | None = None
    digest: str | None = None
    state: str = "no container"
    health: str | None = None
    uptime: str | None = None
    started: str | None = None
    restarts: int | None = None
    kept: tuple[str, ...] = ()
    error: str | None = None
    #: False while a Swarm update is under way: counts as drift
    settled: bool = True
    #: the role of a plain host's row (web for an app without roles)
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data, without the fields that do not apply to it."""
        data = asdict(self)
        data["kept"] = list(self.kept)
        del data["settled"]
        always = ("host", "release", "digest", "state")
        return {key: value for key, value in data.items() if value is not None or key in always}


@dataclass(frozen=True)
class Status:
    """Every row of `deploy status`, and whether the fleet drifts."""

    rows: list[StatusRow]

    @property
    def drift(self) -> bool:
        """True when hosts serve different releases, or a service is still changing."""
        serving = {(row.release, row.digest) for row in self.rows}
        return len(serving) > 1 or not all(row.settled for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """As `deploy status --json` prints it."""
        return {"hosts": [row.to_dict() for row in self.rows], "drift": self.drift}
