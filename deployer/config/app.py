"""The `app` section: the image, its registry, container, health check, rollout, proxy, hooks and roles."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator
from pydantic import model_validator as _model_validator

from deployer.config.base import (
    CLI_ENV_NAMES,
    CLI_ENV_PREFIXES,
    DAY,
    ENV_NAME,
    HOUR,
    MAX_COUNT,
    MAX_RESTARTS,
    MINUTE,
    MOUNT_PATH,
    NAME,
    PERCENT,
    URL_PATH,
    VOLUME_NAME,
    StrictModel,
    check_env_keys,
    check_ports,
    is_address,
    registry_server,
)


class Build(StrictModel):
    """How the image is built."""

    context: str = Field(".", description="Build context directory, relative to the inventory file.")
    dockerfile: str = Field("Dockerfile", description="Dockerfile path, relative to the context.")
    args: dict[str, str] = Field(
        default_factory=dict,
        description="Build arguments. They stay in the image history: never put secrets here.",
    )


class Registry(StrictModel):
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
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value


class Container(StrictModel):
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
        return check_ports(values)

    @field_validator("env")
    @classmethod
    def _env_keys(cls, values: dict[str, str]) -> dict[str, str]:
        return check_env_keys(values)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not ENV_NAME.fullmatch(value):
                raise ValueError(f"{value!r} is not an environment variable name")
            if value.startswith(CLI_ENV_PREFIXES) or value in CLI_ENV_NAMES:
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
                if not MOUNT_PATH.fullmatch(source):
                    raise ValueError(
                        f"{value!r}: a bind mount's host path must not contain ',', '\"' or control characters"
                    )
            elif not VOLUME_NAME.fullmatch(source):
                raise ValueError(
                    f"{value!r}: {source!r} is not a volume name (letters, digits, '_', '.', '-', "
                    "starting with a letter or digit) nor an absolute path"
                )
            if not MOUNT_PATH.fullmatch(target):
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


class Healthcheck(StrictModel):
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
        if len(value) > 2048 or not URL_PATH.fullmatch(value):
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


class Rollout(StrictModel):
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
            and (match := PERCENT.fullmatch(value))
            and 1 <= int(match.group(1)) <= 100
        ):
            return value
        raise ValueError(f'must be a count from 1 to {MAX_COUNT} or a percentage like "25%"')


_HOST_NAME = re.compile(r"^(?=.{1,253}$)(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

#: the reverse proxy's image when the inventory names none: Caddy 2's official image, by version
DEFAULT_PROXY_IMAGE = "caddy:2.11"


class TLSFiles(StrictModel):
    """A certificate and its key: PEM files on the operator's machine."""

    cert: str = Field(description="Certificate chain (PEM), relative to the inventory file.")
    key: str = Field(
        description="Private key (PEM), relative to the inventory file; it reaches the proxy on stdin only."
    )


class Proxy(StrictModel):
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
            if not (_HOST_NAME.match(value) or is_address(value)):
                raise ValueError(f"{value!r} is not a host name like example.com (lower-case)")
        if len(set(values)) != len(values):
            raise ValueError("a host name is listed twice")
        return values

    @_model_validator(mode="after")
    def _consistent(self) -> Proxy:
        if self.http_port == self.https_port:
            raise ValueError("http_port and https_port must differ")
        if self.tls == "auto":
            addresses = [host for host in self.hosts if is_address(host)]
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


class Hooks(StrictModel):
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


def _registry_kind(value: object) -> str | None:
    """``false`` is no registry; a mapping is one."""
    if value is False:
        return "none"
    return "registry" if isinstance(value, dict | Registry) else None


#: the tags pydantic puts in an error's location inside `app.registry`; left out of messages
REGISTRY_TAGS = ("registry", "none")

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


class RoleSpec(StrictModel):
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
        return values if values is None else check_ports(values)

    @field_validator("env")
    @classmethod
    def _env_keys(cls, values: dict[str, str]) -> dict[str, str]:
        return check_env_keys(values)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("a group or host is listed twice")
        return values


class App(StrictModel):
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
        if not NAME.fullmatch(value):
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
