"""The deploy inventory for the lab, written in the project's documented style."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

Inventory = dict[str, Any]


def default_inventory(*, registry: str, username: str, context: str, identity_file: str,
                      known_hosts: str, groups: dict[str, Any]) -> Inventory:
    """The inventory that deploys the sample app to the host `groups`."""
    return {
        "app": {
            "name": "web",
            "image": f"{registry}/acme/web",
            "build": {"context": context, "dockerfile": "Dockerfile"},
            "registry": {"server": registry, "username": username,
                         "password_env": "DEPLOY_REGISTRY_PASSWORD"},
            "container": {"ports": ["8080:8080"], "volumes": ["web-data:/data"], "init": True},
            "healthcheck": {"path": "/health", "port": 8080, "timeout": 20},
            "rollout": {"batch_size": 1, "max_failures": 0},
            "keep_releases": 3,
        },
        "ssh": {"user": "root", "port": 22, "identity_file": identity_file,
                "known_hosts": known_hosts},
        "hosts": copy.deepcopy(groups),
    }


def merge(base: Inventory, overrides: Inventory) -> Inventory:
    """A copy of `base` with `overrides` merged in; nested dicts merge, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render(inventory: Inventory) -> str:
    """YAML text: top-level sections in block style, flat mappings and lists of
    scalars below them in flow style (`build: {context: ., dockerfile: Dockerfile}`)."""
    lines: list[str] = []
    _block(inventory, 0, lines)
    text = "\n".join(lines) + "\n"
    assert yaml.safe_load(text) == inventory, "inventory does not round-trip"
    return text


def _is_flat(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return all(not isinstance(item, (dict, list)) for item in items)


def _block(mapping: dict[str, Any], depth: int, lines: list[str]) -> None:
    indent = "  " * depth
    for raw_key, value in mapping.items():
        key = _scalar(raw_key, flow=False)
        if isinstance(value, dict) and value and (depth == 0 or not _is_flat(value)):
            lines.append(f"{indent}{key}:")
            _block(value, depth + 1, lines)
        elif isinstance(value, (dict, list)) and _is_flat(value):
            lines.append(f"{indent}{key}: {_flow(value)}")
        elif isinstance(value, list):
            lines.append(f"{indent}{key}:")
            for item in value:
                lines.append(f"{indent}  - {json.dumps(item)}")
        else:
            lines.append(f"{indent}{key}: {_scalar(value, flow=False)}")


def _flow(value: dict[str, Any] | list[Any]) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k, flow=True)}: {_scalar(v, flow=True)}"
                               for k, v in value.items()) + "}"
    # Sequence items with a colon are quoted, like compose port and volume specs.
    return "[" + ", ".join(json.dumps(item) if isinstance(item, str) and ":" in item
                           else _scalar(item, flow=True) for item in value) + "]"


def _scalar(value: Any, *, flow: bool) -> str:
    """A plain scalar when YAML reads it back unchanged, else a JSON (double-quoted) one."""
    if not isinstance(value, str):
        return json.dumps(value)
    try:
        plain = yaml.safe_load(f"[{value}]" if flow else f"k: {value}")
    except yaml.YAMLError:
        plain = None
    return value if plain == ([value] if flow else {"k": value}) else json.dumps(value)
