"""How hosts are reached and grouped: `ssh`, a group's hosts, or a Swarm cluster."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator
from pydantic import model_validator as _model_validator

from deployer.config.base import DAY, HOUR, MAX_COUNT, StrictModel


class SSH(StrictModel):
    """How hosts are reached. Unset values come from ~/.ssh/config, then from SSH's defaults."""

    user: str | None = Field(None, description="Login user.")
    port: int | None = Field(None, ge=1, le=65535, description="SSH port.")
    identity_file: str | None = Field(
        None, description="Private key file (relative to the inventory file); ssh-agent keys are tried too."
    )
    known_hosts: str | None = Field(
        None,
        description="Extra known_hosts file, read besides ~/.ssh/known_hosts. Unknown host keys are refused.",
    )
    config_file: str = Field(
        "~/.ssh/config", description="OpenSSH client config honoured for aliases and defaults."
    )
    connect_timeout: float = Field(10, gt=0, le=600, description="Seconds to connect and log in.")
    command_timeout: float = Field(
        30,
        gt=0,
        le=3600,
        description="Seconds any one command on a host may run (state reads, inspect, stop and start, "
        "lock, history), pulls excepted; `docker stop` also gets the container's `stop_timeout`.",
    )
    pull_timeout: float = Field(
        600,
        gt=0,
        le=86400,
        description="Seconds one image pull on a host may run (and, on a Swarm cluster, one service "
        "create or update, which logs in to the registry).",
    )
    parallel: int = Field(16, ge=1, le=1024, description="Hosts worked on at once.")


class HostSpec(StrictModel):
    """One host of a group: an address, or a mapping with per-host overrides."""

    address: str = Field(description="Host name, ~/.ssh/config alias, or IP address.")
    port: int | None = Field(None, ge=1, le=65535, description="SSH port for this host.")
    user: str | None = Field(None, description="Login user for this host.")

    @_model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        return {"address": value} if isinstance(value, str) else value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value) or value.startswith("-"):
            raise ValueError(f"{value!r} is not a host name or address")
        return value


class SwarmUpdate(StrictModel):
    """How Swarm replaces a service's tasks; a failed update is always rolled back."""

    parallelism: int = Field(1, ge=0, le=MAX_COUNT, description="Tasks replaced at once (0: all at once).")
    delay: float = Field(0, ge=0, le=HOUR, description="Seconds between two batches of tasks.")
    monitor: float = Field(
        5,
        ge=0,
        le=HOUR,
        description="Seconds Swarm watches each new task; a task failing in them fails the update.",
    )
    order: Literal["stop-first", "start-first"] = Field(
        "stop-first",
        description="stop-first: the old task stops before its replacement starts; start-first needs a "
        "free node when ports are published.",
    )


class Swarm(StrictModel):
    """A Docker Swarm cluster, changed through one of its managers."""

    manager: HostSpec = Field(
        description="A manager node, reached over SSH like any host: a name, or a mapping like a host's."
    )
    replicas: int | str = Field(
        "global",
        description=f'Tasks of the service: a count (1 to {MAX_COUNT}), or "global" for one task on every node.',
    )
    update: SwarmUpdate = Field(default_factory=SwarmUpdate, description="How Swarm replaces tasks.")
    timeout: float = Field(
        300,
        gt=0,
        le=DAY,
        description="Seconds the service has to converge (every task running and healthy) before "
        "deploy rolls it back.",
    )

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas(cls, value: object) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT:
            return value
        if value == "global":
            return value
        raise ValueError(f'must be a count from 1 to {MAX_COUNT}, or "global" for one task on every node')


class Cluster(StrictModel):
    """A host group that is a Swarm cluster instead of a list of hosts."""

    swarm: Swarm = Field(description="The cluster's manager and the service's settings.")


def _group_kind(value: object) -> str | None:
    """The kind of a group, read from the file (a list or a mapping) or from a model (when dumped)."""
    if isinstance(value, list):
        return "hosts"
    return "swarm" if isinstance(value, dict | Cluster) else None


#: the tags pydantic puts in an error's location inside a group; left out of messages
GROUP_TAGS = ("hosts", "swarm")

Group = Annotated[
    Annotated[list[HostSpec], Tag("hosts")] | Annotated[Cluster, Tag("swarm")],
    Discriminator(
        _group_kind,
        custom_error_type="group",
        custom_error_message="a group is a list of hosts, or a mapping with a swarm key",
    ),
]
