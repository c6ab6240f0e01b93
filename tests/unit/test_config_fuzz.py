"""Whatever document the loader is fed, it only ever raises the tool's own configuration error."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer import config
from deployer.errors import ConfigError

from .test_config import CONTRACT

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
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
        config.parse(text)
    except ConfigError as exc:
        assert exc.message
        assert "Traceback" not in exc.message


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents(document: object) -> None:
    _check(yaml.safe_dump(document))


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=4), st.sampled_from(["app", "ssh", "hosts"]))
def test_contract_with_random_parts(replacement: dict[str, object], section: str) -> None:
    data = yaml.safe_load(CONTRACT)
    data[section] = {**data[section], **replacement} if isinstance(data[section], dict) else replacement
    _check(yaml.safe_dump(data))


@settings(max_examples=150)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _check(text)
