"""Reading an inventory file: strict YAML, validation, and errors that name the key path and line."""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from deployer.config.app import REGISTRY_TAGS
from deployer.config.base import DEFAULT_INVENTORY, TAG
from deployer.config.hosts import GROUP_TAGS, Cluster, HostSpec
from deployer.config.inventory import Inventory
from deployer.errors import ConfigError, UsageError

#: deepest nesting of lists and mappings an inventory may have (its schema needs 6)
MAX_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys, and numbers or dates Python cannot hold."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        if isinstance(key, typing.Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    try:
        return loader.construct_yaml_int(node)
    except ValueError as exc:  # more digits than int() converts
        raise yaml.constructor.ConstructorError(
            None, None, "this number has too many digits", node.start_mark
        ) from exc


def _construct_timestamp(loader: _StrictLoader, node: yaml.ScalarNode) -> object:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError as exc:  # 2024-13-45
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a valid date: {exc}", node.start_mark
        ) from exc


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _check_structure(text: str, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH and NUL characters, from the parser's events.

    The events come without recursion, so this runs before anything that recurses per level.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        problem = None
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                problem = f"lists and mappings nested more than {MAX_DEPTH} deep"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent) and "\x00" in event.value:
            problem = "a NUL character (\\0) in a value"
        if problem is not None:
            mark = event.start_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: {problem}")


def release_tag(value: str, flag: str = "--to") -> str:
    """A release tag given on the command line, as Docker allows tags; UsageError otherwise."""
    if not TAG.fullmatch(value):
        shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
        raise UsageError(
            f"{flag} {shown} is not a release tag",
            hint="a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'; "
            "`deploy history` lists the releases",
        )
    return value


def resolve_path(flag: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The inventory path: the flag, else ``DEPLOY_INVENTORY``, else ./inventory.yaml."""
    environ = os.environ if environ is None else environ
    return Path(flag or environ.get("DEPLOY_INVENTORY") or DEFAULT_INVENTORY)


def load(path: Path) -> Inventory:
    """Read and validate the inventory at *path*; raise ConfigError naming every problem."""
    text = read_text(
        path,
        missing="no inventory file here",
        unreadable="cannot read the inventory",
        hint="pass -i PATH or set DEPLOY_INVENTORY; inventory.example.yaml documents every key",
    )
    return parse(text, path)


def read_text(path: Path, *, missing: str, unreadable: str, hint: str) -> str:
    """A file the inventory or the user points at; ConfigError when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: {missing}", hint=hint) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {unreadable}: {exc}") from exc


def parse(text: str, path: Path = Path(DEFAULT_INVENTORY)) -> Inventory:
    """Validate inventory *text*; *path* names the file in messages and anchors relative paths."""
    try:
        data, root = _read_yaml(text, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except RecursionError:  # aliases that nest deeper than the text does
        raise ConfigError(f"{path}: lists and mappings nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the inventory must be a mapping with app, ssh and hosts")
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, root)) from None
    inventory._path = path
    return inventory


def _read_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """The document's data, and its node tree (for line numbers in messages)."""
    _check_structure(text, path)
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    finally:
        loader.dispose()


def _describe(exc: ValidationError, path: Path, root: yaml.Node | None) -> str:
    lines = []
    for error in exc.errors():
        loc = _without_tag(error["loc"])
        where = _key_path(loc)
        line = _line_of(root, loc)
        prefix = f"{path}:{line}" if line else str(path)
        kind = error["type"]
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1)
            message = f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{prefix}: {where}: {message}")
    return "invalid inventory:\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0]


def _without_tag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """*loc* without the group kind pydantic puts after a group's name (hosts.G.swarm.swarm...)."""
    if loc[:1] == ("hosts",) and len(loc) > 2 and loc[2] in GROUP_TAGS:
        return loc[:2] + loc[3:]
    if loc[:2] == ("app", "registry") and len(loc) > 2 and loc[2] in REGISTRY_TAGS:
        return loc[:2] + loc[3:]
    return loc


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at *loc*, or of its closest existing parent."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v if part != loc[-1] else k for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model class inside a type annotation, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model that sits at *loc* in the inventory."""
    model: type[BaseModel] | None = Inventory
    if loc[:1] == ("hosts",) and len(loc) > 1:  # a group: a list of hosts (hosts.G[0]...), or a cluster
        listed = len(loc) > 2 and isinstance(loc[2], int)
        model, loc = (HostSpec, loc[3:]) if listed else (Cluster, loc[2:])
    for part in loc:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = model_in(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []
