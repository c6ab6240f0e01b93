"""The docs reference and the example file cannot drift from the validator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deployer import reference

ROOT = Path(__file__).parents[2]


def test_docs_reference_is_generated_from_the_models() -> None:
    assert (ROOT / "docs" / "inventory.md").read_text() == reference.render(), (
        "run: python -m deployer.reference > docs/inventory.md"
    )


def _paths(node: Any, prefix: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            found.add(path)
            if prefix == "" and key == "hosts":
                for members in value.values():
                    if isinstance(members, dict):  # a Swarm cluster
                        found |= _paths(members, "hosts.<group>.")
                        continue
                    for member in members:
                        found |= _paths(member, "hosts.<group>[].") if isinstance(member, dict) else set()
            elif prefix == "app." and key == "roles":
                for role in value.values():
                    found |= _paths(role, "app.roles.<role>.")
            elif prefix == "" and key == "accessories":
                for accessory in value.values():
                    found |= _paths({key: value for key, value in accessory.items() if key != "env"}, "accessories.<name>.")
                    found |= {"accessories.<name>.env"} if "env" in accessory else set()
            elif not (prefix == "app.build." and key == "args") and not (prefix == "app.container." and key == "env") and not (prefix.startswith("app.roles.") and key == "env"):
                found |= _paths(value, f"{path}.")
    return found


def test_example_file_shows_every_key_and_only_real_keys() -> None:
    example = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
    assert _paths(example) == {path for path, _ in reference.keys()}  # noqa: SIM118 (not a dict)
