"""Whatever document the loader is fed, it only ever raises the tool's own configuration error."""

from __future__ import annotations

import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer import config
from deployer.errors import ConfigError

from .test_config import CONTRACT

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
KEYS = ["app", "ssh", "hosts", "name", "image", "container", "ports", "healthcheck", "rollout", "batch_size", "port"]


def _check(text: str) -> None:
    try:
        inventory = config.parse(text)
    except ConfigError as exc:
        assert exc.message
        assert "Traceback" not in exc.message
    else:
        assert all(math.isfinite(number) for number in _numbers(inventory.model_dump()) if isinstance(number, float))
        assert all(abs(number) <= config.DAY for number in _numbers(inventory.model_dump(exclude={"ssh"})))


def _numbers(node: object) -> list[float]:
    if isinstance(node, dict):
        return [number for value in node.values() for number in _numbers(value)]
    if isinstance(node, list):
        return [number for value in node for number in _numbers(value)]
    return [node] if isinstance(node, (int, float)) and not isinstance(node, bool) else []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents(document: object) -> None:
    _check(yaml.safe_dump(document))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=4), st.sampled_from(["app", "ssh", "hosts"]))
def test_contract_with_random_parts(replacement: dict[str, object], section: str) -> None:
    data = yaml.safe_load(CONTRACT)
    data[section] = {**data[section], **replacement} if isinstance(data[section], dict) else replacement
    _check(yaml.safe_dump(data))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _check(text)


#: every number of the schema, as (section, path) in the contract inventory
NUMBERS = [
    ("app", ("keep_releases",)),
    ("app", ("container", "stop_timeout")),
    ("app", ("healthcheck", "port")),
    ("app", ("healthcheck", "timeout")),
    ("app", ("healthcheck", "interval")),
    ("app", ("healthcheck", "watch")),
    ("app", ("rollout", "batch_size")),
    ("app", ("rollout", "max_failures")),
    ("ssh", ("port",)),
    ("ssh", ("connect_timeout",)),
    ("ssh", ("command_timeout",)),
    ("ssh", ("parallel",)),
]
SWARM_NUMBERS = [("replicas",), ("timeout",), ("update", "parallelism"), ("update", "delay"), ("update", "monitor"), ("manager", "port")]
#: numbers as YAML writes them, including ones Python's int() or float() cannot hold
RAW_NUMBERS = st.one_of(
    st.sampled_from(
        [".inf", "-.inf", ".nan", ".NaN", "1.0e+300", "-1.0e+300", "1.0e+400", "4.9e-324", "-0", "0x" + "f" * 80,
         "0o777", "1_000_000", "190:20:30", "9" * 5000, "-" + "9" * 5000, "1e300", "2024-13-45"]
    ),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats().map(lambda number: yaml.safe_dump(number).splitlines()[0]),
)


def _set(data: dict[str, object], path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        child = data.setdefault(key, {})
        assert isinstance(child, dict)
        data = child
    data[path[-1]] = value


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NUMBERS), RAW_NUMBERS)
def test_extreme_numbers_anywhere(where: tuple[str, tuple[str, ...]], number: str) -> None:
    data = yaml.safe_load(CONTRACT)
    section, path = where
    _set(data[section], path, "@NUMBER@")
    _check(yaml.safe_dump(data).replace("'@NUMBER@'", number))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SWARM_NUMBERS), RAW_NUMBERS)
def test_extreme_numbers_in_a_swarm_cluster(path: tuple[str, ...], number: str) -> None:
    data = yaml.safe_load(CONTRACT)
    data["hosts"]["cluster"] = {"swarm": {"manager": {"address": "m"}}}
    _set(data["hosts"]["cluster"]["swarm"], path, "@NUMBER@")
    _check(yaml.safe_dump(data).replace("'@NUMBER@'", number))


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["keep_releases: 5", "ports: [\"80:8080\"]", "  - web1.example.com", "user: deploy"]),
    st.sampled_from(["[", "{a: ", "[{a: ", "- ", "\n- "]),
    st.integers(min_value=1, max_value=20_000),
    st.booleans(),
)
def test_deep_nesting_anywhere(line: str, opener: str, depth: int, closed: bool) -> None:
    closer = {"[": "]", "{a: ": "}", "[{a: ": "}]"}.get(opener, "") if closed else ""
    key, _, _ = line.partition(": ")
    nested = opener * depth + "1" + closer * depth
    _check(CONTRACT.replace(line, f"{key}: {nested}" if ": " in line else f"  - {nested}", 1))


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=2000), st.sampled_from(["{k: *a%d}", "[*a%d]", "{k: [*a%d]}"]))
def test_aliases_nesting_anywhere(levels: int, shape: str) -> None:
    lines = ["x:", "  - &a0 {k: 1}"] + [f"  - &a{i} " + shape % (i - 1) for i in range(1, levels)]
    _check(CONTRACT + "\n".join(lines) + f"\ny: *a{levels - 1}\n")
