"""The values the inventory names variables for: the registry password and the secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import SecretStr

from deployer.config.inventory import Inventory
from deployer.errors import ConfigError


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
