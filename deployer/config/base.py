"""What the inventory's models share: bounds, name patterns, the strict base model, checks of
ports and addresses, and how an image names its registry.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict

DEFAULT_INVENTORY = "inventory.yaml"

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: keys of `app.container.env`: passed as ``--env KEY=VALUE``, so dots and dashes are allowed too
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
PORT = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(?P<host>\d{1,5}):)?(?P<container>\d{1,5})"
    r"(?:/(?:tcp|udp))?$"
)
PERCENT = re.compile(r"^(\d{1,3})%$")
#: a Docker image tag
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: a Docker volume name, as the engine accepts it
VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: an absolute path inside a volume spec: no ``,`` or ``"`` (Swarm's --mount is comma-separated CSV)
MOUNT_PATH = re.compile(r'^/[^,"\x00-\x1f\x7f]*$')
#: an HTTP path and query: RFC 3986 path and query characters, "%" only as a %XX escape
URL_PATH = re.compile(r"^/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$")
#: secret names the docker command on a host reads itself: a secret reaches the container through
#: the environment of that command, so it must not change which engine, config or binary it uses
CLI_ENV_PREFIXES = ("DOCKER_", "LD_")
CLI_ENV_NAMES = ("PATH", "HOME")

#: upper bounds of the inventory's numbers: durations in seconds, and counts of hosts or tasks
MINUTE, HOUR, DAY = 60, 3600, 86400
MAX_COUNT = 10_000
MAX_RESTARTS = 10_000


class StrictModel(BaseModel):
    """A part of the inventory: unknown keys refused, values frozen, no infinite or NaN numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def check_ports(values: list[str]) -> list[str]:
    """*values* if each is a port mapping Docker accepts (``[IP:][HOST:]CONTAINER[/PROTO]``)."""
    for value in values:
        match = PORT.fullmatch(value)
        if not match:
            raise ValueError(f'{value!r} is not a port mapping like "80:8080"')
        numbers = [int(port) for port in match.group("host", "container") if port is not None]
        if any(not 1 <= port <= 65535 for port in numbers):
            raise ValueError(f"{value!r}: a port is a number from 1 to 65535")
        ip = match.group("ip")
        if ip is not None and not ip.startswith("[") and any(int(octet) > 255 for octet in ip.split(".")):
            raise ValueError(f"{value!r}: {ip} is not an IPv4 address")
    return values


def check_env_keys(values: dict[str, str]) -> dict[str, str]:
    """*values* if each key is a name ``docker --env KEY=VALUE`` takes."""
    for key in values:
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(
                f"{key!r} is not an environment variable name (letters, digits, '_', '.', '-', "
                "not starting with a digit, '.' or '-')"
            )
    return values


def is_address(value: str) -> bool:
    """True for an IPv4 or IPv6 address (not a host name)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


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
