"""The whole inventory: the app, its accessories and the host groups, checked against each other."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic import model_validator as _model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from deployer.config.app import App
from deployer.config.base import DEFAULT_INVENTORY, NAME, PORT, StrictModel
from deployer.config.container import Container, Healthcheck
from deployer.config.hosts import SSH, Cluster, Group, HostSpec

#: an accessory's name: it names its container and is its host name on the app's network (a DNS label)
_ACCESSORY_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: the tag deploy gives a release (a commit's first 12 hex digits); a container named after one
#: (`<app>-<tag>`) is a release's
_COMMIT_TAG = re.compile(r"^[0-9a-f]{12}$")
#: the reverse proxy's container (deployer.proxy.CONTAINER), never an accessory's name
_PROXY_CONTAINER = "deploy-proxy"


class Accessory(Container):
    """A container that runs beside the app on some hosts (an exporter, a cache, a database), started
    and changed by `deploy accessory`, never by a rollout or a rollback."""

    image: str = Field(
        description="The image, pinned by tag or digest (any registry; the app's registry login is used for "
        'images in app.registry.server), e.g. "redis:7.2" or "registry.example.com/tools/exporter@sha256:...".'
    )
    hosts: list[str] = Field(
        min_length=1,
        description="Groups (lists of hosts, not Swarm clusters) and host names it runs on.",
    )
    cmd: list[str] = Field(
        default_factory=list, description="Arguments after the image (docker run IMAGE CMD...); none: the image's own."
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Names of environment variables whose values are read from the local environment when the "
        "accessory is booted or rebooted, and handed to the container without appearing in any command line. "
        "Names starting with DOCKER_ or LD_, PATH and HOME are refused.",
    )
    healthcheck: Healthcheck = Field(
        default_factory=Healthcheck,
        description="When a booted or rebooted accessory counts as healthy; keys as in app.healthcheck.",
    )
    restart: str = Field("unless-stopped", description="Docker restart policy of the accessory's container.")

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value) or value.startswith("-"):
            raise ValueError(f"{value!r} is not an image reference")
        repository, at, digest = value.partition("@")
        if at and not re.fullmatch(r"^sha256:[0-9a-f]{64}$", digest):
            raise ValueError(f"{value!r}: a digest is sha256: and 64 hex digits")
        last = repository.rsplit("/", 1)[-1]
        if not at and ":" not in last:
            raise ValueError(f"{value!r} names no tag: pin the image by tag or digest, e.g. {value}:1.2")
        return value


class Inventory(StrictModel):
    """The whole inventory file."""

    app: App = Field(description="The application.")
    ssh: SSH = Field(default_factory=SSH, description="How hosts are reached.")
    hosts: dict[str, Group] = Field(
        description="Host groups: a name and its hosts, or a name and a Swarm cluster."
    )
    accessories: dict[str, Accessory] = Field(
        default_factory=dict,
        description="Containers beside the app, by name: `deploy accessory` boots, reboots and removes them; "
        "rollouts and rollbacks leave them alone. The app reaches each by its name on the app's network.",
    )
    _path: Path = PrivateAttr(default=Path(DEFAULT_INVENTORY))

    @_model_validator(mode="after")
    def _swarm_needs_a_registry(self) -> Inventory:
        clusters = [group for group, members in self.hosts.items() if isinstance(members, Cluster)]
        if self.app.no_registry and clusters:
            raise ValueError(
                f"app.registry: false cannot serve the Swarm cluster of group {clusters[0]!r}: its nodes "
                "pull the image themselves and cannot reach this machine; give the app a registry "
                "(app.registry.server), or deploy to plain hosts"
            )
        return self

    @_model_validator(mode="after")
    def _role_hosts(self) -> Inventory:
        """Each role's hosts name groups or hosts of the inventory, never a Swarm cluster."""
        addresses = {m.address for members in self.hosts.values() if isinstance(members, list) for m in members}
        errors: list[InitErrorDetails] = []
        for name, role in self.app.roles.items():
            for index, value in enumerate(role.hosts):
                if isinstance(self.hosts.get(value), Cluster):
                    message = (
                        f"{value!r} is a Swarm cluster; roles run on plain hosts only (a cluster runs "
                        "the app as one service)"
                    )
                elif value not in self.hosts and value not in addresses:
                    message = f"{value!r} is neither a group nor a host of the inventory"
                else:
                    continue
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("role_hosts", message),
                        loc=("app", "roles", name, "hosts", index),
                        input=value,
                    )
                )
        if errors:
            raise ValidationError.from_exception_data("Inventory", errors)
        return self

    @field_validator("accessories")
    @classmethod
    def _accessories(cls, value: dict[str, Accessory], info: ValidationInfo) -> dict[str, Accessory]:
        app, groups = info.data.get("app"), info.data.get("hosts")
        if isinstance(app, App) and isinstance(groups, dict):
            accessory_problems(value, app, groups)
        return value

    @field_validator("hosts")
    @classmethod
    def _groups(cls, value: dict[str, list[HostSpec] | Cluster]) -> dict[str, list[HostSpec] | Cluster]:
        for group, members in value.items():
            if group == "all":
                raise ValueError("'all' is reserved: it names every host")
            if not NAME.fullmatch(group):
                raise ValueError(f"group {group!r} must be lower-case letters, digits, '.', '_' or '-'")
            if not members:
                raise ValueError(f"group {group!r} has no hosts")
        return value

    @property
    def path(self) -> Path:
        """The file the inventory was read from."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """Directory relative paths in the inventory are resolved against."""
        return self._path.resolve().parent

    @property
    def dockerfile(self) -> Path:
        """The Dockerfile the inventory builds: ``app.build.dockerfile`` inside ``app.build.context``."""
        build = self.app.build
        return self.base_dir / build.context / build.dockerfile

    def local_path(self, value: str) -> Path:
        """A path from the inventory: ``~`` expanded, relative ones taken from the inventory's folder."""
        return self.base_dir / Path(value).expanduser()


def _host_ports(specs: list[str]) -> dict[tuple[str, str], str]:
    """The host ports *specs* publish, as (port, protocol), each with the spec that publishes it."""
    found = {}
    for spec in specs:
        match = PORT.fullmatch(spec)
        if match and match.group("host") is not None:
            found[(match.group("host"), "udp" if spec.endswith("/udp") else "tcp")] = spec
    return found


def accessory_problems(accessories: Mapping[str, Accessory], app: App, groups: Mapping[str, object]) -> None:
    """Refuse what would collide on a host: a name, a container name, a host port; or placement on
    hosts the inventory does not have. Raises ValueError naming the key and the other party."""
    members = {
        getattr(member, "address", "") for group in groups.values() if isinstance(group, list) for member in group
    }
    taken: dict[tuple[str, str], str] = {
        port: f"app.container.ports publishes it ({spec!r})" for port, spec in _host_ports(app.container.ports).items()
    }
    if app.proxy is not None:
        for number, key in ((app.proxy.http_port, "http_port"), (app.proxy.https_port, "https_port")):
            taken[(str(number), "tcp")] = f"the proxy listens on it (app.proxy.{key})"
    for name, accessory in accessories.items():
        where = name
        if not _ACCESSORY_NAME.fullmatch(name):
            raise ValueError(
                f"{where}: {name!r} must be lower-case letters, digits and '-', not starting or ending with '-' "
                "(it is the accessory's host name on the app's network)"
            )
        container = f"{app.name}-{name}"
        if name == app.name:
            raise ValueError(f"{where}: an accessory cannot be named like the app ({app.name})")
        if _COMMIT_TAG.fullmatch(name) or "-dirty-" in name:
            raise ValueError(
                f"{where}: its container {container} would be named like a release's container (<app>-<tag>)"
            )
        if container == _PROXY_CONTAINER:
            raise ValueError(f"{where}: its container {container} would be named like the reverse proxy's")
        for target in accessory.hosts:
            if target in groups and not isinstance(groups[target], list):
                raise ValueError(f"{where}.hosts: {target!r} is a Swarm cluster; accessories run on plain hosts")
            if target not in groups and target not in members:
                raise ValueError(f"{where}.hosts: {target!r} is neither a group nor a host of the inventory")
        for port, spec in _host_ports(accessory.ports).items():
            if port in taken:
                raise ValueError(f"{where}.ports: {spec!r}: host port {port[0]}/{port[1]} is taken: {taken[port]}")
            taken[port] = f"the accessory {name} publishes it ({spec!r})"
