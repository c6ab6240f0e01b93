"""The `app` section: the image, its build and registry, hooks and roles, and the container,
health check, rollout and proxy settings (from their own modules).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator
from pydantic import model_validator as _model_validator

from deployer.config.base import (
    DAY,
    ENV_NAME,
    HOUR,
    NAME,
    StrictModel,
    check_env_keys,
    check_ports,
    registry_server,
)
from deployer.config.container import Container, Healthcheck, Rollout
from deployer.config.proxy import Proxy


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
