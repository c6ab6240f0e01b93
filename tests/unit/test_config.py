"""The inventory loader: the contract's keys, and one clear message per kind of mistake."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from deployer import config
from deployer.errors import ConfigError, UsageError

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
            'inv.yaml:1: app.rollout.batch_size: must be a count from 1 to 10000 or a percentage like "25%"',
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
            'inv.yaml:4: hosts.c.swarm.replicas: must be a count from 1 to 10000, or "global" for one task on every node',
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


def _app(app: str) -> str:
    return "app: {name: web, image: r/web, " + app + "}\nhosts: {prod: [a]}\n"


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("healthcheck: {interval: .inf}", "app.healthcheck.interval: Input should be a finite number"),
        ("healthcheck: {interval: .nan}", "app.healthcheck.interval: Input should be a finite number"),
        ("healthcheck: {interval: 1.0e+300}", "app.healthcheck.interval: Input should be less than or equal to 60"),
        ("healthcheck: {timeout: 1.0e+300}", "app.healthcheck.timeout: Input should be less than or equal to 3600"),
        ("healthcheck: {watch: -.inf}", "app.healthcheck.watch: Input should be a finite number"),
        ("healthcheck: {watch: -1}", "app.healthcheck.watch: Input should be greater than or equal to 0"),
        ("container: {stop_timeout: 99999999999999999999}", "app.container.stop_timeout: Input should be less than or equal to 3600"),
        ("container: {restart: 'on-failure:99999'}", "app.container.restart: 'on-failure:99999': at most 10000 restarts"),
        ("container: {ports: ['99999:80']}", "app.container.ports: '99999:80': a port is a number from 1 to 65535"),
        ("container: {ports: ['80:0']}", "app.container.ports: '80:0': a port is a number from 1 to 65535"),
        ("container: {ports: ['1.2.3.400:80:80']}", "app.container.ports: '1.2.3.400:80:80': 1.2.3.400 is not an IPv4 address"),
        ("keep_releases: 1000", "app.keep_releases: Input should be less than or equal to 100"),
        ("rollout: {batch_size: 10001}", 'app.rollout.batch_size: must be a count from 1 to 10000 or a percentage like "25%"'),
        ("rollout: {max_failures: .inf}", "app.rollout.max_failures: Input should be a finite number"),
        ("rollout: {max_failures: 1.0e+300}", "app.rollout.max_failures: Unable to parse input string as an integer, exceeded maximum size"),
        ("rollout: {max_failures: 1.5}", "app.rollout.max_failures: Input should be a valid integer, got a number with a fractional part"),
    ],
)
def test_every_number_is_bounded_and_finite(app: str, expected: str) -> None:
    assert _error(_app(app)) == f"inv.yaml:1: {expected}"


@pytest.mark.parametrize(
    ("swarm", "expected"),
    [
        ("replicas: 100000", 'replicas: must be a count from 1 to 10000, or "global" for one task on every node'),
        ("timeout: .inf", "timeout: Input should be a finite number"),
        ("timeout: 1.0e+9", "timeout: Input should be less than or equal to 86400"),
        ("update: {parallelism: 99999}", "update.parallelism: Input should be less than or equal to 10000"),
        ("update: {delay: .nan}", "update.delay: Input should be a finite number"),
        ("update: {monitor: 1.0e+300}", "update.monitor: Input should be less than or equal to 3600"),
    ],
)
def test_every_swarm_number_is_bounded_and_finite(swarm: str, expected: str) -> None:
    text = "app: {name: web, image: r/web}\nhosts:\n  c: {swarm: {manager: m, " + swarm + "}}\n"
    assert _error(text) == f"inv.yaml:3: hosts.c.swarm.{expected}"


DEEP = {
    "flow lists": ("x: " + "[" * 20000, "inv.yaml:1:35: lists and mappings nested more than 32 deep"),
    "flow mappings": ("x: " + "{a: " * 20000, "inv.yaml:1:128: lists and mappings nested more than 32 deep"),
    "block lists": ("- " * 20000 + "a\n", "inv.yaml:1:65: lists and mappings nested more than 32 deep"),
    "block mappings": ("".join(" " * i + "a:\n" for i in range(300)), "inv.yaml:33:33: lists and mappings nested more than 32 deep"),
    "huge integer": (f"x: {'9' * 5000}", "inv.yaml:1:4: this number has too many digits"),
    "impossible date": ("x: 2024-13-45", "inv.yaml:1:4: '2024-13-45' is not a valid date: month must be in 1..12"),
    "NUL": ('app: {name: "web\\0"}', "inv.yaml:1:13: a NUL character (\\0) in a value"),
}


@pytest.mark.parametrize(("text", "expected"), DEEP.values(), ids=DEEP.keys())
def test_pathological_documents_get_one_clear_message(text: str, expected: str) -> None:
    assert _error(text) == expected


def test_aliases_nesting_deeper_than_the_text_get_one_clear_message() -> None:
    """Each anchor is shallow, but resolving the aliases chains them into one deep structure."""
    levels = 5000
    lines = ["x:", "  - &a0 {k: 1}"] + [f"  - &a{i} {{k: *a{i - 1}}}" for i in range(1, levels)]
    assert _error("\n".join([*lines, f"y: *a{levels - 1}"]) + "\n") == "inv.yaml: lists and mappings nested too deeply"


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ("env: {'': x}", "app.container.env: '' is not an environment variable name"),
        ("env: {'A B': x}", "app.container.env: 'A B' is not an environment variable name"),
        ("env: {'-e': x}", "app.container.env: '-e' is not an environment variable name"),
        ("env: {'C=D': x}", "app.container.env: 'C=D' is not an environment variable name"),
        ("env: {A: x}, secrets: [A]", "app.container: A: set in both env and secrets"),
        ("secrets: [DOCKER_HOST]", "app.container.secrets: 'DOCKER_HOST' cannot be a secret: the docker command on the host reads it itself"),
        ("secrets: [PATH]", "app.container.secrets: 'PATH' cannot be a secret: the docker command on the host reads it itself"),
        (
            "volumes: ['data,type=bind,source=/:/host']",
            "app.container.volumes: 'data,type=bind,source=/:/host': 'data,type=bind,source=/' is not a volume name",
        ),
        ("volumes: ['-v:/data']", "app.container.volumes: '-v:/data': '-v' is not a volume name"),
        ("volumes: ['/srv/a,b:/data']", "app.container.volumes: '/srv/a,b:/data': a bind mount's host path must not contain"),
        ("volumes: ['data:/data,readonly']", "app.container.volumes: 'data:/data,readonly': the container path must not contain"),
    ],
)
def test_env_keys_and_volume_sources_are_checked(container: str, expected: str) -> None:
    assert _error(_app("container: {" + container + "}")).startswith(f"inv.yaml:1: {expected}")


def test_valid_env_keys_volumes_and_health_paths_load() -> None:
    inventory = config.parse(
        _app(
            "container: {env: {spring.profiles.active: prod, LOG-LEVEL: x, _A1: y}, "
            "volumes: ['web_data.1:/var/data', '/srv/my data:/data:ro', '/:/host:ro']}, "
            "healthcheck: {path: \"/health?full=1&x=%2F;a=b:c@d~e!f$g'(h)*+,\", port: 80}"
        )
    )
    assert list(inventory.app.container.env) == ["spring.profiles.active", "LOG-LEVEL", "_A1"]
    assert inventory.app.healthcheck.path == "/health?full=1&x=%2F;a=b:c@d~e!f$g'(h)*+,"


@pytest.mark.parametrize("path", ["/{health,missing}", "/[1-9]", "/a b", "/a\tb", "/a#frag", "/%zz", "/a\\b", '/"'])
def test_health_paths_name_exactly_one_url(path: str) -> None:
    message = _error(_app(f"healthcheck: {{path: {json.dumps(path)}, port: 80}}"))
    assert message.startswith(f"inv.yaml:1: app.healthcheck.path: {path!r} is not a URL path")


def test_a_secret_that_is_not_utf8_is_refused_without_showing_it() -> None:
    inventory = config.parse(CONTRACT)
    value = b"pre\xffpost".decode("utf-8", "surrogateescape")  # how os.environ holds such bytes
    with pytest.raises(ConfigError) as caught:
        config.container_secrets(inventory, {"DATABASE_URL": value})
    shown = caught.value.message + (caught.value.hint or "")
    assert caught.value.message == "app.container.secrets names DATABASE_URL, whose value is not UTF-8 text"
    assert "pre" not in shown and "post" not in shown and "xff" not in shown and "position" not in shown
    with pytest.raises(ConfigError, match="DEPLOY_REGISTRY_PASSWORD, whose value is not UTF-8 text"):
        config.registry_password(inventory, {"DEPLOY_REGISTRY_PASSWORD": value})


def test_a_multi_line_secret_is_kept_whole() -> None:
    inventory = config.parse(CONTRACT)
    values = config.container_secrets(inventory, {"DATABASE_URL": "line1\nINJECTED=1\n"})
    assert values["DATABASE_URL"].get_secret_value() == "line1\nINJECTED=1\n"


@pytest.mark.parametrize("tag", ["", " ", "-x", ".x", "a b", "a:b", "x" * 129, "v1\n"])
def test_a_release_tag_on_the_command_line_is_checked(tag: str) -> None:
    with pytest.raises(UsageError) as caught:
        config.release_tag(tag)
    assert caught.value.message.startswith("--to ") and caught.value.message.endswith(" is not a release tag")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("tag", ["0123456789ab", "v1.2.3", "v1-dirty-abc", "_x", "x" * 128])
def test_release_tags_docker_allows_are_kept(tag: str) -> None:
    assert config.release_tag(tag) == tag


@pytest.mark.parametrize(
    ("app", "key"),
    [
        ('container: {secrets: ["TOKEN\\n"]}', "app.container.secrets"),
        ('container: {env: {"A\\n": x}}', "app.container.env"),
        ('container: {volumes: ["data\\n:/data"]}', "app.container.volumes"),
        ('container: {ports: ["80:80\\n"]}', "app.container.ports"),
        ('healthcheck: {path: "/health\\n", port: 80}', "app.healthcheck.path"),
    ],
)
def test_a_trailing_newline_does_not_slip_past_a_pattern(app: str, key: str) -> None:
    assert _error(_app(app)).startswith(f"inv.yaml:1: {key}: ")
    assert _error('app: {name: "web\\n", image: r/web}\nhosts: {prod: [a]}\n').startswith("inv.yaml:1: app.name: ")
