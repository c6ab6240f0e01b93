"""The inventory file: its schema, loading, and validation with key-path errors.

The pydantic models below are the single source of the inventory's shape: the validator,
`docs/inventory.md` (rendered by :mod:`deployer.reference`) and `inventory.example.yaml`
(checked against it by a test) all come from them.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic import model_validator as _model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from deployer.errors import ConfigError, UsageError

DEFAULT_INVENTORY = "inventory.yaml"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: keys of `app.container.env`: passed as ``--env KEY=VALUE``, so dots and dashes are allowed too
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_PORT = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(?P<host>\d{1,5}):)?(?P<container>\d{1,5})"
    r"(?:/(?:tcp|udp))?$"
)
_PERCENT = re.compile(r"^(\d{1,3})%$")
#: a Docker image tag
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: a Docker volume name, as the engine accepts it
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: an absolute path inside a volume spec: no ``,`` or ``"`` (Swarm's --mount is comma-separated CSV)
_MOUNT_PATH = re.compile(r'^/[^,"\x00-\x1f\x7f]*$')
#: an HTTP path and query: RFC 3986 path and query characters, "%" only as a %XX escape
_URL_PATH = re.compile(r"^/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$")
#: secret names the docker command on a host reads itself: a secret reaches the container through
#: the environment of that command, so it must not change which engine, config or binary it uses
_CLI_ENV_PREFIXES = ("DOCKER_", "LD_")
_CLI_ENV_NAMES = ("PATH", "HOME")

#: upper bounds of the inventory's numbers: durations in seconds, and counts of hosts or tasks
MINUTE, HOUR, DAY = 60, 3600, 86400
MAX_COUNT = 10_000
MAX_RESTARTS = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Build(_Model):
    """How the image is built."""

    context: str = Field(".", description="Build context directory, relative to the inventory file.")
    dockerfile: str = Field("Dockerfile", description="Dockerfile path, relative to the context.")
    args: dict[str, str] = Field(
        default_factory=dict,
        description="Build arguments. They stay in the image history: never put secrets here.",
    )


class Registry(_Model):
    """Where images are pushed and pulled from."""

    server: str = Field(description="Registry host[:port], e.g. registry.example.com:5000.")
    username: str | None = Field(
        None, description="Registry user. Omit to use the local Docker credential store."
    )
    password_env: str | None = Field(
        None,
        description="Name of the environment variable that holds the registry password; the value is never stored.",
    )

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value


def _check_ports(values: list[str]) -> list[str]:
    for value in values:
        match = _PORT.fullmatch(value)
        if not match:
            raise ValueError(f'{value!r} is not a port mapping like "80:8080"')
        numbers = [int(port) for port in match.group("host", "container") if port is not None]
        if any(not 1 <= port <= 65535 for port in numbers):
            raise ValueError(f"{value!r}: a port is a number from 1 to 65535")
        ip = match.group("ip")
        if ip is not None and not ip.startswith("[") and any(int(octet) > 255 for octet in ip.split(".")):
            raise ValueError(f"{value!r}: {ip} is not an IPv4 address")
    return values


def _check_env_keys(values: dict[str, str]) -> dict[str, str]:
    for key in values:
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(
                f"{key!r} is not an environment variable name (letters, digits, '_', '.', '-', "
                "not starting with a digit, '.' or '-')"
            )
    return values


class Container(_Model):
    """How the container runs on each host."""

    ports: list[str] = Field(
        default_factory=list, description='Published ports, "HOST:CONTAINER" as for docker run -p.'
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Plain environment variables (not secret). Names: letters, digits, '_', '.', '-', "
        "not starting with a digit, '.' or '-'.",
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Names of environment variables whose values are read from the local environment at rollout "
        "and handed to the container without appearing in any command line. Values may span several lines; "
        "names starting with DOCKER_ or LD_, PATH and HOME are refused.",
    )
    volumes: list[str] = Field(
        default_factory=list,
        description='Named volumes or bind mounts, "NAME:/path" or "/host/path:/path[:ro]" (no commas in paths). '
        "Never removed by deploy.",
    )
    restart: str = Field("unless-stopped", description="Docker restart policy of the running release.")
    stop_timeout: int = Field(
        10, ge=0, le=HOUR, description="Seconds a container has to stop after SIGTERM before it is killed."
    )
    init: bool = Field(
        False,
        description="Run an init process as PID 1 so the app receives signals (docker run --init).",
    )

    @field_validator("ports")
    @classmethod
    def _ports(cls, values: list[str]) -> list[str]:
        return _check_ports(values)

    @field_validator("env")
    @classmethod
    def _env_keys(cls, values: dict[str, str]) -> dict[str, str]:
        return _check_env_keys(values)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _ENV_NAME.fullmatch(value):
                raise ValueError(f"{value!r} is not an environment variable name")
            if value.startswith(_CLI_ENV_PREFIXES) or value in _CLI_ENV_NAMES:
                raise ValueError(
                    f"{value!r} cannot be a secret: the docker command on the host reads it itself"
                )
        return values

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, values: list[str]) -> list[str]:
        for value in values:
            parts = value.split(":")
            if len(parts) not in (2, 3) or not parts[1].startswith("/") or not parts[0]:
                raise ValueError(f'{value!r} is not a volume like "data:/var/data" or "/srv/data:/data:ro"')
            source, target = parts[:2]
            if source.startswith("/"):
                if not _MOUNT_PATH.fullmatch(source):
                    raise ValueError(
                        f"{value!r}: a bind mount's host path must not contain ',', '\"' or control characters"
                    )
            elif not _VOLUME_NAME.fullmatch(source):
                raise ValueError(
                    f"{value!r}: {source!r} is not a volume name (letters, digits, '_', '.', '-', "
                    "starting with a letter or digit) nor an absolute path"
                )
            if not _MOUNT_PATH.fullmatch(target):
                raise ValueError(
                    f"{value!r}: the container path must not contain ',', '\"' or control characters"
                )
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"{value!r}: the mode must be ro or rw")
        return values

    @field_validator("restart")
    @classmethod
    def _restart(cls, value: str) -> str:
        match = re.fullmatch(r"^on-failure(?::(\d{1,6}))?$", value)
        if value not in ("no", "always", "unless-stopped") and not match:
            raise ValueError(
                f"{value!r} is not a restart policy (no, always, unless-stopped, on-failure[:N])"
            )
        if match and match.group(1) is not None and int(match.group(1)) > MAX_RESTARTS:
            raise ValueError(f"{value!r}: at most {MAX_RESTARTS} restarts")
        return value

    @_model_validator(mode="after")
    def _env_or_secret(self) -> Container:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)}: set in both env and secrets")
        return self


class Healthcheck(_Model):
    """When a new release counts as healthy."""

    path: str | None = Field(
        None,
        description="HTTP path (and query) that must answer 2xx; characters outside RFC 3986's path and query "
        "set are written %XX. Without it the image's HEALTHCHECK is used, "
        "and without that the container must keep running for `watch` seconds.",
    )
    port: int | None = Field(None, ge=1, le=65535, description="Container port the path is served on.")
    timeout: float = Field(30, gt=0, le=HOUR, description="Seconds a release has to become healthy.")
    interval: float = Field(0.2, gt=0, le=MINUTE, description="Seconds between two checks.")
    watch: float = Field(
        0,
        ge=0,
        le=HOUR,
        description="Seconds a healthy release must keep running, without restarts, before it counts.",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with /")
        if len(value) > 2048 or not _URL_PATH.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a URL path: letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @ / ?, "
                "other characters as %XX"
            )
        return value

    @_model_validator(mode="after")
    def _port_with_path(self) -> Healthcheck:
        if self.path is not None and self.port is None:
            raise ValueError("a health path needs the container port it is served on (healthcheck.port)")
        return self


class Rollout(_Model):
    """How hosts are switched."""

    batch_size: int | str = Field(
        1,
        description=f'Hosts switched at once: a count (1 to {MAX_COUNT}), or a share of the hosts like "25%".',
    )
    max_failures: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="Failed hosts tolerated before the rollout stops and every switched host goes back.",
    )

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: object) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT:
            return value
        if (
            isinstance(value, str)
            and (match := _PERCENT.fullmatch(value))
            and 1 <= int(match.group(1)) <= 100
        ):
            return value
        raise ValueError(f'must be a count from 1 to {MAX_COUNT} or a percentage like "25%"')


_HOST_NAME = re.compile(r"^(?=.{1,253}$)(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

#: the reverse proxy's image when the inventory names none: Caddy 2's official image, by version
DEFAULT_PROXY_IMAGE = "caddy:2.11"


class TLSFiles(_Model):
    """A certificate and its key: PEM files on the operator's machine."""

    cert: str = Field(description="Certificate chain (PEM), relative to the inventory file.")
    key: str = Field(
        description="Private key (PEM), relative to the inventory file; it reaches the proxy on stdin only."
    )


class Proxy(_Model):
    """The reverse proxy on each host that moves traffic to a new release only once it is healthy."""

    hosts: list[str] = Field(
        min_length=1, description="Host names routed to this app, e.g. [example.com, www.example.com]."
    )
    app_port: int = Field(ge=1, le=65535, description="Container port the app serves HTTP on.")
    tls: Literal["off", "internal", "auto"] | TLSFiles = Field(
        "off",
        description="off: plain HTTP; internal: certificates from the proxy's own CA (staging, tests); "
        "auto: certificates from an ACME CA such as Let's Encrypt (public DNS names only); "
        "or {cert: PATH, key: PATH}.",
    )
    drain_timeout: float = Field(
        30,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds requests and WebSocket connections in flight keep the old release after "
        "traffic has moved to the new one.",
    )
    image: str = Field(
        DEFAULT_PROXY_IMAGE,
        description="The proxy's image (Caddy 2); one proxy serves every app of a host.",
    )
    http_port: int = Field(80, ge=1, le=65535, description="Host port the proxy serves HTTP on.")
    https_port: int = Field(443, ge=1, le=65535, description="Host port the proxy serves HTTPS on.")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        for value in values:
            if not (_HOST_NAME.match(value) or _is_address(value)):
                raise ValueError(f"{value!r} is not a host name like example.com (lower-case)")
        if len(set(values)) != len(values):
            raise ValueError("a host name is listed twice")
        return values

    @_model_validator(mode="after")
    def _consistent(self) -> Proxy:
        if self.http_port == self.https_port:
            raise ValueError("http_port and https_port must differ")
        if self.tls == "auto":
            addresses = [host for host in self.hosts if _is_address(host)]
            if addresses:
                raise ValueError(
                    f"tls: auto needs public DNS names; an ACME CA gives no certificate for {addresses[0]}"
                )
        return self


#: a command a hook runs: an argv list, or a string run by ``sh -c``
HookCommand = list[str] | str


def _hook_commands(values: list[list[str] | str]) -> list[list[str] | str]:
    for value in values:
        if isinstance(value, str) and not value.strip():
            raise ValueError("a hook command must not be empty")
        if isinstance(value, list) and (not value or not value[0]):
            raise ValueError("a hook command list must name a program first")
    return values


class Hooks(_Model):
    """Commands run around a rollout: once in a one-off container before the switch, and on the
    operator's machine after a rollout or rollback. A command is an argv list (run as is) or a
    string (run by ``sh -c``, so the image or the machine needs a shell)."""

    before_switch: list[HookCommand] = Field(
        default_factory=list,
        description="Commands run in order, once per rollout that switches a host, after every host has "
        "pulled the release and before any container is switched: in a one-off container of the new "
        "release on the first host, with the app's env, secrets and volumes, under the lock. A command "
        "that fails stops the rollout with nothing switched (exit 7). Not run on a Swarm cluster.",
    )
    before_switch_timeout: float = Field(
        600, gt=0, le=DAY, description="Seconds each before_switch command may run before it is stopped."
    )
    after: list[HookCommand] = Field(
        default_factory=list,
        description="Commands run on the operator's machine after every rollout and rollback, whatever "
        "the outcome, given DEPLOY_APP, DEPLOY_ACTION, DEPLOY_RELEASE, DEPLOY_OUTCOME, DEPLOY_EXIT_CODE, "
        "DEPLOY_HOSTS and DEPLOY_MESSAGE in their environment, never the app's secrets. A failure only "
        "warns.",
    )
    after_timeout: float = Field(
        60, gt=0, le=HOUR, description="Seconds each after command may run before it is stopped."
    )

    @field_validator("before_switch", "after")
    @classmethod
    def _commands(cls, values: list[list[str] | str]) -> list[list[str] | str]:
        return _hook_commands(values)


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _registry_kind(value: object) -> str | None:
    """``false`` is no registry; a mapping is one."""
    if value is False:
        return "none"
    return "registry" if isinstance(value, dict | Registry) else None


RegistryChoice = Annotated[
    Annotated[Registry, Tag("registry")] | Annotated[Literal[False], Tag("none")],
    Discriminator(
        _registry_kind,
        custom_error_type="registry",
        custom_error_message="a registry is a mapping with server (and username, password_env), "
        "or false for none",
    ),
]


#: the role an app without `app.roles` runs as; a role of this name keeps that app's container
#: names, history, published ports and health check
DEFAULT_ROLE = "web"
_ROLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class RoleSpec(_Model):
    """One role of the app: the same image and release, run with its own command on its own hosts."""

    hosts: list[str] = Field(
        min_length=1, description="Groups and hosts of the inventory the role runs on (plain hosts only)."
    )
    cmd: list[str] | None = Field(
        None,
        min_length=1,
        description="The command, as for docker run IMAGE CMD...: it replaces the image's CMD, the "
        "image's ENTRYPOINT stays. Omit to run the image's own.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables merged over app.container.env."
    )
    ports: list[str] | None = Field(
        None,
        description="Published ports. Omitted: app.container.ports for the web role, none for any other.",
    )
    healthcheck: Healthcheck | None = Field(
        None,
        description="When the role's new release counts as healthy (the keys of app.healthcheck). "
        "Omitted: app.healthcheck for the web role and a role behind the proxy; any other role "
        "only has to keep running (not exit, not restart) for a few seconds, and the image's "
        "HEALTHCHECK is turned off for it.",
    )
    proxy: bool | None = Field(
        None,
        description="Route app.proxy's host names to this role (one role at most). Omitted: true for "
        "the web role when app.proxy is set, else false.",
    )

    @field_validator("ports")
    @classmethod
    def _ports(cls, values: list[str] | None) -> list[str] | None:
        return values if values is None else _check_ports(values)

    @field_validator("env")
    @classmethod
    def _env_keys(cls, values: dict[str, str]) -> dict[str, str]:
        return _check_env_keys(values)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("a group or host is listed twice")
        return values


class App(_Model):
    """The application: its image, build, registry and container."""

    name: str = Field(description="Names the containers, the release history and the lock on each host.")
    image: str = Field(
        description="Image repository, without a tag, e.g. registry.example.com:5000/acme/web."
    )
    build: Build = Field(default_factory=Build, description="How the image is built.")
    registry: RegistryChoice | None = Field(
        None,
        description="Registry credentials. Omit to use the Docker credential store; `false`: no registry, "
        "hosts pull each release from this machine through their SSH connection (app.image is then a "
        "plain repository name like acme/web).",
    )
    container: Container = Field(default_factory=Container, description="How the container runs.")
    healthcheck: Healthcheck = Field(
        default_factory=Healthcheck, description="When a new release counts as healthy."
    )
    rollout: Rollout = Field(default_factory=Rollout, description="How hosts are switched.")
    keep_releases: int = Field(5, ge=1, le=100, description="Previous releases kept on each host for rollback.")
    proxy: Proxy | None = Field(
        None,
        description="Serve the app through a reverse proxy on each host, switched start-first with no "
        "dropped request. Omit for services that are not HTTP, or that publish their own ports.",
    )
    hooks: Hooks = Field(
        default_factory=Hooks, description="Commands run before the switch and after a run (docs/day-two.md)."
    )
    roles: dict[str, RoleSpec] = Field(
        default_factory=dict,
        description="The app's roles by name (lower-case letters, digits, '_', '-'; 32 at most), e.g. "
        "web and worker: each runs the release with its own command, environment, health check and "
        "hosts. Omit for an app that is one role, web, on every host (docs/roles.md).",
    )

    @_model_validator(mode="after")
    def _roles(self) -> App:
        for name, role in self.roles.items():
            if not _ROLE_NAME.fullmatch(name):
                raise ValueError(
                    f"roles: {name!r} must be 1 to 32 lower-case letters, digits, '_' or '-', "
                    "starting with a letter or digit"
                )
            where = f"roles.{name}"
            both = sorted(set(role.env) & set(self.container.secrets))
            if both:
                raise ValueError(f"{where}.env: {', '.join(both)}: set in both env and container.secrets")
            if role.proxy and self.proxy is None:
                raise ValueError(f"{where}.proxy: a role behind the proxy needs app.proxy")
            if role.ports and self.role_proxied(name):
                raise ValueError(
                    f"{where}.ports: a role behind the proxy publishes no host port (two releases run "
                    "side by side during a switch)"
                )
        proxied = [name for name in self.roles if self.role_proxied(name)]
        if len(proxied) > 1:
            raise ValueError(
                f"roles: {' and '.join(proxied)} are both behind the proxy; app.proxy routes its host "
                "names to one role (set proxy: false on the others)"
            )
        if self.roles and self.proxy is not None and not proxied:
            raise ValueError(
                "roles: app.proxy is set but no role is behind it; set proxy: true on the role that "
                "serves HTTP"
            )
        return self

    def role_proxied(self, name: str) -> bool:
        """True when role *name* (or the app without roles) is behind `app.proxy`."""
        role = self.roles.get(name)
        if role is None or role.proxy is None:
            return self.proxy is not None and name == DEFAULT_ROLE
        return role.proxy

    @_model_validator(mode="after")
    def _proxy_publishes(self) -> App:
        if self.proxy is not None and self.container.ports:
            raise ValueError(
                "container.ports: an app behind the proxy publishes no host port (two releases run "
                "side by side during a switch); the proxy listens on proxy.http_port and proxy.https_port"
            )
        return self

    @_model_validator(mode="after")
    def _plain_repository(self) -> App:
        if self.registry is False and registry_server(self.image) != "docker.io":
            raise ValueError(
                f"image: {self.image!r} names a registry, but registry is false: with no registry "
                "the image is a plain repository name like acme/web"
            )
        if self.registry is False and self.image.startswith(("docker.io/", "index.docker.io/")):
            raise ValueError(
                f"image: {self.image!r} names Docker Hub, but registry is false: drop the docker.io/ prefix"
            )
        return self

    @property
    def registry_settings(self) -> Registry | None:
        """The registry section, when it is one (None when omitted or false)."""
        return self.registry if isinstance(self.registry, Registry) else None

    @property
    def no_registry(self) -> bool:
        """`registry: false`: releases travel from this machine over each host's SSH connection."""
        return self.registry is False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits, '.', '_' or '-'")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        last = value.rsplit("/", 1)[-1]
        if "@" in value or ":" in last:
            raise ValueError(f"{value!r} must be a repository without a tag or digest")
        if not value or value != value.strip() or not re.fullmatch(r"^[a-z0-9./:_-]+$", value):
            raise ValueError(f"{value!r} is not an image repository name")
        return value


class SSH(_Model):
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


class HostSpec(_Model):
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


class SwarmUpdate(_Model):
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


class Swarm(_Model):
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


class Cluster(_Model):
    """A host group that is a Swarm cluster instead of a list of hosts."""

    swarm: Swarm = Field(description="The cluster's manager and the service's settings.")


def _group_kind(value: object) -> str | None:
    """The kind of a group, read from the file (a list or a mapping) or from a model (when dumped)."""
    if isinstance(value, list):
        return "hosts"
    return "swarm" if isinstance(value, dict | Cluster) else None


#: the tags pydantic puts in an error's location inside a group; left out of messages
_GROUP_TAGS = ("hosts", "swarm")
_REGISTRY_TAGS = ("registry", "none")

Group = Annotated[
    Annotated[list[HostSpec], Tag("hosts")] | Annotated[Cluster, Tag("swarm")],
    Discriminator(
        _group_kind,
        custom_error_type="group",
        custom_error_message="a group is a list of hosts, or a mapping with a swarm key",
    ),
]


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


class Inventory(_Model):
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
            if not _NAME.fullmatch(group):
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
        match = _PORT.fullmatch(spec)
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


#: the names Docker Hub goes by, and the key a Docker client configuration files its login under
HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
HUB_KEY = "https://index.docker.io/v1/"


def credentials_key(server: str) -> str:
    """The key of *server*'s login in a Docker client configuration (``auths``, helpers)."""
    return HUB_KEY if server in HUB_NAMES else server


def registry_server(image: str) -> str:
    """The registry host[:port] an image repository names (``docker.io`` when it names none)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


# ---------------------------------------------------------------- loading


#: deepest nesting of lists and mappings an inventory may have (its schema needs 6)
MAX_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys, and numbers or dates Python cannot hold."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        if isinstance(key, typing.Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    try:
        return loader.construct_yaml_int(node)
    except ValueError as exc:  # more digits than int() converts
        raise yaml.constructor.ConstructorError(
            None, None, "this number has too many digits", node.start_mark
        ) from exc


def _construct_timestamp(loader: _StrictLoader, node: yaml.ScalarNode) -> object:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError as exc:  # 2024-13-45
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a valid date: {exc}", node.start_mark
        ) from exc


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _check_structure(text: str, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH and NUL characters, from the parser's events.

    The events come without recursion, so this runs before anything that recurses per level.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        problem = None
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                problem = f"lists and mappings nested more than {MAX_DEPTH} deep"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent) and "\x00" in event.value:
            problem = "a NUL character (\\0) in a value"
        if problem is not None:
            mark = event.start_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: {problem}")


def release_tag(value: str, flag: str = "--to") -> str:
    """A release tag given on the command line, as Docker allows tags; UsageError otherwise."""
    if not _TAG.fullmatch(value):
        shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
        raise UsageError(
            f"{flag} {shown} is not a release tag",
            hint="a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'; "
            "`deploy history` lists the releases",
        )
    return value


def resolve_path(flag: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The inventory path: the flag, else ``DEPLOY_INVENTORY``, else ./inventory.yaml."""
    environ = os.environ if environ is None else environ
    return Path(flag or environ.get("DEPLOY_INVENTORY") or DEFAULT_INVENTORY)


def load(path: Path) -> Inventory:
    """Read and validate the inventory at *path*; raise ConfigError naming every problem."""
    text = read_text(
        path,
        missing="no inventory file here",
        unreadable="cannot read the inventory",
        hint="pass -i PATH or set DEPLOY_INVENTORY; inventory.example.yaml documents every key",
    )
    return parse(text, path)


def read_text(path: Path, *, missing: str, unreadable: str, hint: str) -> str:
    """A file the inventory or the user points at; ConfigError when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: {missing}", hint=hint) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {unreadable}: {exc}") from exc


def parse(text: str, path: Path = Path(DEFAULT_INVENTORY)) -> Inventory:
    """Validate inventory *text*; *path* names the file in messages and anchors relative paths."""
    try:
        data, root = _read_yaml(text, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except RecursionError:  # aliases that nest deeper than the text does
        raise ConfigError(f"{path}: lists and mappings nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the inventory must be a mapping with app, ssh and hosts")
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, root)) from None
    inventory._path = path
    return inventory


def _read_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """The document's data, and its node tree (for line numbers in messages)."""
    _check_structure(text, path)
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    finally:
        loader.dispose()


def _describe(exc: ValidationError, path: Path, root: yaml.Node | None) -> str:
    lines = []
    for error in exc.errors():
        loc = _without_tag(error["loc"])
        where = _key_path(loc)
        line = _line_of(root, loc)
        prefix = f"{path}:{line}" if line else str(path)
        kind = error["type"]
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1)
            message = f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{prefix}: {where}: {message}")
    return "invalid inventory:\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0]


def _without_tag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """*loc* without the group kind pydantic puts after a group's name (hosts.G.swarm.swarm...)."""
    if loc[:1] == ("hosts",) and len(loc) > 2 and loc[2] in _GROUP_TAGS:
        return loc[:2] + loc[3:]
    if loc[:2] == ("app", "registry") and len(loc) > 2 and loc[2] in _REGISTRY_TAGS:
        return loc[:2] + loc[3:]
    return loc


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at *loc*, or of its closest existing parent."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v if part != loc[-1] else k for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model class inside a type annotation, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model that sits at *loc* in the inventory."""
    model: type[BaseModel] | None = Inventory
    if loc[:1] == ("hosts",) and len(loc) > 1:  # a group: a list of hosts (hosts.G[0]...), or a cluster
        listed = len(loc) > 2 and isinstance(loc[2], int)
        model, loc = (HostSpec, loc[3:]) if listed else (Cluster, loc[2:])
    for part in loc:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = model_in(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


# ---------------------------------------------------------------- environment


def registry_password(inventory: Inventory, environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """The registry password from the variable `app.registry.password_env` names, if one is named."""
    registry = inventory.app.registry_settings
    if registry is None or registry.password_env is None:
        return None
    return _from_env("app.registry.password_env", registry.password_env, environ)


def container_secrets(inventory: Inventory, environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
    """The values of `app.container.secrets`, read from the local environment."""
    return {
        name: _from_env("app.container.secrets", name, environ) for name in inventory.app.container.secrets
    }


def accessory_secrets(
    inventory: Inventory, name: str, environ: Mapping[str, str] | None = None
) -> dict[str, SecretStr]:
    """The values of `accessories.<name>.secrets`, read from the local environment."""
    return {
        secret: _from_env(f"accessories.{name}.secrets", secret, environ)
        for secret in inventory.accessories[name].secrets
    }


def _from_env(key: str, name: str, environ: Mapping[str, str] | None) -> SecretStr:
    """The value of variable *name*; a message about it never shows any part of the value."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value is None:
        raise ConfigError(
            f"{key} names {name}, which is not set in the environment", hint=f"export {name}=..."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as lone surrogates
        raise ConfigError(
            f"{key} names {name}, whose value is not UTF-8 text", hint=f"set {name} to UTF-8 text"
        ) from None
    if "\x00" in value:
        raise ConfigError(f"{key} names {name}, whose value contains a NUL character") from None
    return SecretStr(value)
