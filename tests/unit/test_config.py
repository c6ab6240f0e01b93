"""The inventory loader: the contract's keys, and one clear message per kind of mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from deployer import config
from deployer.errors import ConfigError

CONTRACT = """\
app:
  name: web
  image: registry.example.com:5000/acme/web
  build: {context: ., dockerfile: Dockerfile, args: {}}
  registry:
    server: registry.example.com:5000
    username: deploy
    password_env: DEPLOY_REGISTRY_PASSWORD
  container:
    ports: ["80:8080"]
    env: {LOG_LEVEL: info}
    secrets: [DATABASE_URL]
    volumes: ["web-data:/var/data"]
  healthcheck: {path: /health, port: 8080, timeout: 30}
  rollout: {batch_size: 1, max_failures: 0}
  keep_releases: 5
ssh:
  user: deploy
  port: 22
  identity_file: ~/.ssh/id_ed25519
  known_hosts: ~/.ssh/known_hosts
hosts:
  prod:
    - web1.example.com
    - {address: 10.0.0.7, port: 2222}
  staging:
    - staging1.example.com
"""


def test_contract_inventory_loads_with_every_key() -> None:
    inventory = config.parse(CONTRACT, Path("/srv/app/inventory.yaml"))
    assert inventory.app.name == "web"
    assert inventory.app.registry is not None and inventory.app.registry.password_env == "DEPLOY_REGISTRY_PASSWORD"
    assert inventory.app.container.ports == ["80:8080"]
    assert inventory.app.healthcheck.path == "/health"
    assert inventory.app.rollout.batch_size == 1
    assert [h.address for h in inventory.hosts["prod"]] == ["web1.example.com", "10.0.0.7"]
    assert inventory.hosts["prod"][1].port == 2222
    assert inventory.base_dir == Path("/srv/app")


def test_example_file_loads() -> None:
    inventory = config.load(Path(__file__).parents[2] / "inventory.example.yaml")
    assert inventory.app.name


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config.parse(textwrap.dedent(text), Path("inv.yaml"))
    return caught.value.message


MINIMAL = "app: {name: web, image: r.example/web}\nhosts: {prod: [a]}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "app:\n  name: web\n  image: r/web\n  container:\n    prots: ['80:80']\nhosts: {prod: [a]}\n",
            "inv.yaml:5: app.container.prots: unknown key (did you mean 'ports'?)",
        ),
        ("app: {name: web}\nhosts: {prod: [a]}\n", "inv.yaml:1: app.image: required key is missing"),
        ("app: {name: web, image: r/web}\n", "inv.yaml:1: hosts: required key is missing"),
        (
            "app: {name: web, image: r/web, keep_releases: many}\nhosts: {prod: [a]}\n",
            "inv.yaml:1: app.keep_releases: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "app: {name: web, image: 'r/web:latest'}\nhosts: {prod: [a]}\n",
            "inv.yaml:1: app.image: 'r/web:latest' must be a repository without a tag or digest",
        ),
        (
            "app: {name: web, image: r/web, rollout: {batch_size: 0}}\nhosts: {prod: [a]}\n",
            'inv.yaml:1: app.rollout.batch_size: must be a count of at least 1 or a percentage like "25%"',
        ),
        (
            "app: {name: web, image: r/web}\nhosts:\n  prod:\n    - {address: a, prot: 22}\n",
            "inv.yaml:4: hosts.prod[0].prot: unknown key (did you mean 'port'?)",
        ),
        (
            "app: {name: web, image: r/web, healthcheck: {path: /health}}\nhosts: {prod: [a]}\n",
            "inv.yaml:1: app.healthcheck: a health path needs the container port it is served on (healthcheck.port)",
        ),
        (
            "app: {name: web, image: r/web, container: {ports: ['eighty']}}\nhosts: {prod: [a]}\n",
            "inv.yaml:1: app.container.ports: 'eighty' is not a port mapping like \"80:8080\"",
        ),
        ("app: {name: web, image: r/web}\nhosts: {all: [a]}\n", "inv.yaml:2: hosts: 'all' is reserved: it names every host"),
        ("app: {name: web, image: r/web}\nhosts: {prod: []}\n", "inv.yaml:2: hosts: group 'prod' has no hosts"),
        (
            "app: {name: web, image: r/web}\nhosts:\n  c:\n    swarm: {manager: m, replicas: 0}\n",
            'inv.yaml:4: hosts.c.swarm.replicas: must be a count of at least 1, or "global" for one task on every node',
        ),
        (
            "app: {name: web, image: r/web}\nhosts:\n  c:\n    swarm:\n      manager: m\n      update: {paralelism: 2}\n",
            "inv.yaml:6: hosts.c.swarm.update.paralelism: unknown key (did you mean 'parallelism'?)",
        ),
        (
            "app: {name: web, image: r/web}\nhosts:\n  c:\n    swarm: {manager: m, update: {order: last}}\n",
            "inv.yaml:4: hosts.c.swarm.update.order: Input should be 'stop-first' or 'start-first'",
        ),
        (
            "app: {name: web, image: r/web}\nhosts:\n  c:\n    swarm:\n      manager: {address: m, prot: 22}\n",
            "inv.yaml:5: hosts.c.swarm.manager.prot: unknown key (did you mean 'port'?)",
        ),
        (
            "app: {name: web, image: r/web}\nhosts:\n  c: {swarm: {replicas: 2}}\n",
            "inv.yaml:3: hosts.c.swarm.manager: required key is missing",
        ),
        (
            "app: {name: web, image: r/web}\nhosts:\n  c: {swarm: {manager: m, timeout: 0}}\n",
            "inv.yaml:3: hosts.c.swarm.timeout: Input should be greater than 0",
        ),
        (
            "app: {name: web, image: r/web}\nhosts:\n  c: {swarm: {manager: m}, extra: 1}\n",
            "inv.yaml:3: hosts.c.extra: unknown key",
        ),
        ("app: {name: web, image: r/web}\nhosts: {c: web1}\n", "inv.yaml:2: hosts.c: a group is a list of hosts, or a mapping with a swarm key"),
        ("- just\n- a list\n", "inv.yaml: the inventory must be a mapping with app, ssh and hosts"),
        ("app: {name: web\n", "inv.yaml:2:1: expected ',' or '}', but got '<stream end>'"),
        ("app: {name: web, image: r/web}\napp: {name: x}\nhosts: {p: [a]}\n", "inv.yaml:2:1: duplicate key 'app'"),
    ],
)
def test_mistakes_get_one_clear_message(text: str, expected: str) -> None:
    assert _error(text) == expected


def test_several_mistakes_are_all_listed() -> None:
    message = _error("app: {name: web, image: r/web, bogus: 1}\nhosts: {prod: [a]}\nextra: 2\n")
    assert message.splitlines() == [
        "invalid inventory:",
        "  inv.yaml:1: app.bogus: unknown key",
        "  inv.yaml:3: extra: unknown key",
    ]


def test_missing_file_names_the_path_and_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "nope.yaml")
    assert caught.value.message == f"{tmp_path / 'nope.yaml'}: no inventory file here"
    assert caught.value.hint and "-i PATH" in caught.value.hint


def test_inventory_path_precedence() -> None:
    assert config.resolve_path("a.yaml", {"DEPLOY_INVENTORY": "b.yaml"}) == Path("a.yaml")
    assert config.resolve_path(None, {"DEPLOY_INVENTORY": "b.yaml"}) == Path("b.yaml")
    assert config.resolve_path(None, {}) == Path("inventory.yaml")


def test_secrets_come_from_the_environment_and_never_show() -> None:
    inventory = config.parse(CONTRACT)
    values = config.container_secrets(inventory, {"DATABASE_URL": "postgres://s3cret"})
    assert values["DATABASE_URL"].get_secret_value() == "postgres://s3cret"
    assert "s3cret" not in repr(values)
    assert config.registry_password(inventory, {"DEPLOY_REGISTRY_PASSWORD": "pw"}) is not None


def test_unset_secret_variable_is_named() -> None:
    inventory = config.parse(CONTRACT)
    with pytest.raises(ConfigError) as caught:
        config.container_secrets(inventory, {})
    assert caught.value.message == "app.container.secrets names DATABASE_URL, which is not set in the environment"
    with pytest.raises(ConfigError, match=r"app\.registry\.password_env names DEPLOY_REGISTRY_PASSWORD"):
        config.registry_password(inventory, {})


def test_percentage_batch_size_is_kept() -> None:
    inventory = config.parse(MINIMAL.replace("image: r.example/web", "image: r.example/web, rollout: {batch_size: '25%'}"))
    assert inventory.app.rollout.batch_size == "25%"


def test_a_group_can_be_a_swarm_cluster() -> None:
    inventory = config.parse(
        MINIMAL.replace("hosts: {prod: [a]}", "hosts: {prod: [a], cluster: {swarm: {manager: {address: m, user: ops}}}}")
    )
    cluster = inventory.hosts["cluster"]
    assert isinstance(cluster, config.Cluster)
    assert (cluster.swarm.manager.address, cluster.swarm.manager.user) == ("m", "ops")
    assert (cluster.swarm.replicas, cluster.swarm.update.parallelism, cluster.swarm.update.order) == ("global", 1, "stop-first")
