"""The reverse proxy in front of the app on each host (`app.proxy`) and its TLS settings."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic import model_validator as _model_validator

from deployer.config.base import StrictModel, is_address

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
