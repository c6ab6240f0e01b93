"""Render the inventory reference (docs/inventory.md) from the configuration models."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from deployer.config import MAX_DEPTH, Accessory, Cluster, HostSpec, Inventory, RoleSpec, model_in


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(
            f"`{str(value).lower() if isinstance(value, bool) else value}`" for value in typing.get_args(annotation)
        )
    text = str(annotation).replace("typing.", "").replace("deployer.config.", "")
    for name in ("str", "int", "float", "bool"):
        text = text.replace(f"<class '{name}'>", name)
    return text


def _inner(annotation: Any) -> Iterator[Any]:
    """The types inside *annotation*, through unions and ``Annotated``, outermost first."""
    for arg in typing.get_args(annotation):
        yield arg
        if typing.get_origin(arg) is not typing.Literal:
            yield from _inner(arg)


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value!r}`"
    return "" if field.default is PydanticUndefined else f"`{field.default!r}`"


def _bounds(field: Any) -> str:
    """The range a number must fall in, as a sentence ("" for a field without bounds)."""
    found: dict[str, Any] = {}
    for item in field.metadata:
        for name in ("gt", "ge", "lt", "le"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    low = f"more than {found['gt']}" if "gt" in found else f"at least {found['ge']}" if "ge" in found else ""
    high = f"at most {found['le']}" if "le" in found else f"less than {found['lt']}" if "lt" in found else ""
    if "ge" in found and "le" in found:
        return f"From {found['ge']} to {found['le']}."
    text = ", ".join(part for part in (low, high) if part)
    return text[:1].upper() + text[1:] + "." if text else ""


def keys(model: type[BaseModel] = Inventory, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every key path of the inventory with its pydantic field, parents before children."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, field
        child = model_in(field.annotation)
        if path == "hosts":
            yield from keys(HostSpec, f"{path}.<group>[].")
            yield from keys(Cluster, f"{path}.<group>.")
        elif path == "app.roles":
            yield from keys(RoleSpec, f"{path}.<role>.")
        elif path == "accessories":
            yield from keys(Accessory, f"{path}.<name>.")
        elif child is not None:
            yield from keys(child, f"{path}.")


def render() -> str:
    """The Markdown reference of every inventory key."""
    lines = [
        "# Inventory reference",
        "",
        "Generated from `deployer/config/` by `python -m deployer.reference`; a test keeps it in step.",
        "Unknown keys are refused with their path and the closest valid key, and so are numbers outside",
        f"the range a key gives, `.inf` and `.nan`, and lists or mappings nested more than {MAX_DEPTH} deep.",
        "`inventory.example.yaml` shows every key in use.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for path, field in keys():
        annotation = typing.cast(Any, field.annotation)
        type_name = (
            "mapping" if model_in(annotation) is not None and path != "hosts" else _type_name(annotation)
        )
        literals = [arg for arg in _inner(annotation) if typing.get_origin(arg) is typing.Literal]
        if literals and model_in(annotation) is not None:
            type_name = f"{_type_name(literals[0])}, or a mapping"
        if path == "app.roles":
            type_name = "mapping of role name to a role"
        elif path == "accessories":
            type_name = "mapping of accessory name to an accessory"
        if path == "hosts":
            type_name = (
                "mapping of group name to a list of hosts (a string, or a mapping), or to a Swarm cluster"
            )
        description = " ".join(part for part in (field.description, _bounds(field)) if part).replace(
            "|", "\\|"
        )
        lines.append(f"| `{path}` | {type_name.replace('|', 'or')} | {_default(field)} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
