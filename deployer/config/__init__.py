"""The inventory file: its schema, loading, and validation with key-path errors.

The pydantic models are the single source of the inventory's shape: the validator,
`docs/inventory.md` (rendered by :mod:`deployer.reference`) and `inventory.example.yaml`
(checked against it by a test) all come from them. ``base`` holds what the models share,
``app`` the `app` section, with ``container`` (the container, health check, rollout) and
``proxy``; ``hosts`` how hosts are reached and grouped, ``inventory`` the whole file checked
across sections, ``loading`` reading it, ``environment`` the values it names variables for.
Every public name is here too.
"""

from __future__ import annotations

from deployer.config.app import (
    DEFAULT_ROLE,
    REGISTRY_TAGS,
    App,
    Build,
    HookCommand,
    Hooks,
    Registry,
    RegistryChoice,
    RoleSpec,
)
from deployer.config.base import (
    CLI_ENV_NAMES,
    CLI_ENV_PREFIXES,
    DAY,
    DEFAULT_INVENTORY,
    ENV_NAME,
    HOUR,
    HUB_KEY,
    HUB_NAMES,
    MAX_COUNT,
    MAX_RESTARTS,
    MINUTE,
    MOUNT_PATH,
    NAME,
    PERCENT,
    PORT,
    TAG,
    URL_PATH,
    VOLUME_NAME,
    StrictModel,
    check_env_keys,
    check_ports,
    credentials_key,
    is_address,
    registry_server,
)
from deployer.config.container import (
    Container,
    Healthcheck,
    Rollout,
)
from deployer.config.environment import (
    accessory_secrets,
    container_secrets,
    registry_password,
)
from deployer.config.hosts import (
    GROUP_TAGS,
    SSH,
    Cluster,
    Group,
    HostSpec,
    Swarm,
    SwarmUpdate,
)
from deployer.config.inventory import (
    Accessory,
    Inventory,
    accessory_problems,
)
from deployer.config.loading import (
    MAX_DEPTH,
    load,
    model_in,
    parse,
    read_text,
    release_tag,
    resolve_path,
)
from deployer.config.proxy import (
    DEFAULT_PROXY_IMAGE,
    Proxy,
    TLSFiles,
)

__all__ = [
    "CLI_ENV_NAMES",
    "CLI_ENV_PREFIXES",
    "DAY",
    "DEFAULT_INVENTORY",
    "DEFAULT_PROXY_IMAGE",
    "DEFAULT_ROLE",
    "ENV_NAME",
    "GROUP_TAGS",
    "HOUR",
    "HUB_KEY",
    "HUB_NAMES",
    "MAX_COUNT",
    "MAX_DEPTH",
    "MAX_RESTARTS",
    "MINUTE",
    "MOUNT_PATH",
    "NAME",
    "PERCENT",
    "PORT",
    "REGISTRY_TAGS",
    "SSH",
    "TAG",
    "URL_PATH",
    "VOLUME_NAME",
    "Accessory",
    "App",
    "Build",
    "Cluster",
    "Container",
    "Group",
    "Healthcheck",
    "HookCommand",
    "Hooks",
    "HostSpec",
    "Inventory",
    "Proxy",
    "Registry",
    "RegistryChoice",
    "RoleSpec",
    "Rollout",
    "StrictModel",
    "Swarm",
    "SwarmUpdate",
    "TLSFiles",
    "accessory_problems",
    "accessory_secrets",
    "check_env_keys",
    "check_ports",
    "container_secrets",
    "credentials_key",
    "is_address",
    "load",
    "model_in",
    "parse",
    "read_text",
    "registry_password",
    "registry_server",
    "release_tag",
    "resolve_path",
]
