"""The release's container (`app.container`), its health check and how a rollout switches hosts."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic import model_validator as _model_validator

from deployer.config.base import (
    CLI_ENV_NAMES,
    CLI_ENV_PREFIXES,
    ENV_NAME,
    HOUR,
    MAX_COUNT,
    MAX_RESTARTS,
    MINUTE,
    MOUNT_PATH,
    PERCENT,
    URL_PATH,
    VOLUME_NAME,
    StrictModel,
    check_env_keys,
    check_ports,
)


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
