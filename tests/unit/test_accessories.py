"""Accessories: their inventory checks, every command compared exactly, and the runner's decisions
on scripted hosts (boot where missing, reboot one host at a time and put back, remove, logs, status);
rollouts, rollbacks and pruning leave them alone."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import SecretStr

from deployer import accessories, commands, config, proxy, switch, transport
from deployer import fleet as fleet_module
from deployer.commands import Login, RemoteCommand
from deployer.errors import ConfigError, Interrupted
from deployer.inventory import Host
from deployer.output import Output
from deployer.plan import Release
from deployer.state import Container, Entry, HostState
from deployer.targets.plain import PlainHosts
from deployer.transport import CommandResult, LineReader

from . import entrypoint
from .fakehost import FakeHost
from .words import started

T = TypeVar("T")

BASE = """\
app:
  name: web
  image: r/web
  container: {ports: ["8080:8080"]}
  healthcheck: {path: /health, port: 8080, timeout: 0.3, interval: 0.01}
  keep_releases: 1
hosts:
  prod: [h1, h2, h3]
  edge: [h4]
"""

EXPORTER = """\
accessories:
  exporter:
    image: r/exporter:1.0
    hosts: [prod]
    cmd: [--port, "9100"]
    env: {LABEL: one}
    volumes: ["exporter-data:/data"]
    ports: ["9100:9100"]
    stop_timeout: 2
    healthcheck: {path: /metrics, port: 9100, timeout: 0.3, interval: 0.01}
"""


def _inventory(extra: str = EXPORTER, base: str = BASE) -> config.Inventory:
    return config.parse(base + extra)


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config.parse(text)
    return caught.value.message


# ---------------------------------------------------------------- the inventory


def test_an_accessory_loads_with_every_key() -> None:
    inventory = _inventory()
    exporter = inventory.accessories["exporter"]
    assert (exporter.image, exporter.hosts, exporter.cmd) == ("r/exporter:1.0", ["prod"], ["--port", "9100"])
    assert (exporter.env, exporter.volumes, exporter.ports) == ({"LABEL": "one"}, ["exporter-data:/data"], ["9100:9100"])
    assert (exporter.restart, exporter.stop_timeout, exporter.healthcheck.path) == ("unless-stopped", 2, "/metrics")
    assert accessories.placed_on(inventory, "exporter") == ["h1", "h2", "h3"]
    assert _inventory("").accessories == {}


@pytest.mark.parametrize(
    ("accessory", "message"),
    [
        ("web: {image: r/x:1, hosts: [prod]}", "inventory.yaml:10: accessories: web: an accessory cannot be named like the app (web)"),
        (
            "0123456789ab: {image: r/x:1, hosts: [prod]}",
            "inventory.yaml:10: accessories: 0123456789ab: its container web-0123456789ab would be named like a "
            "release's container (<app>-<tag>)",
        ),
        (
            "Redis_1: {image: r/x:1, hosts: [prod]}",
            "inventory.yaml:10: accessories: Redis_1: 'Redis_1' must be lower-case letters, digits and '-', not starting or "
            "ending with '-' (it is the accessory's host name on the app's network)",
        ),
        (
            "exporter: {image: r/x:1, hosts: [prod], ports: ['8080:9100']}",
            "inventory.yaml:10: accessories: exporter.ports: '8080:9100': host port 8080/tcp is taken: "
            "app.container.ports publishes it ('8080:8080')",
        ),
        (
            "one: {image: r/x:1, hosts: [prod], ports: ['127.0.0.1:9100:9100']}\n"
            "  two: {image: r/y:1, hosts: [edge], ports: ['9100:80']}",
            "inventory.yaml:10: accessories: two.ports: '9100:80': host port 9100/tcp is taken: the "
            "accessory one publishes it ('127.0.0.1:9100:9100')",
        ),
        (
            "dns: {image: r/x:1, hosts: [prod], ports: ['8080:53/udp']}",
            None,  # another protocol: no collision
        ),
        (
            "exporter: {image: r/x:1, hosts: [nowhere]}",
            "inventory.yaml:10: accessories: exporter.hosts: 'nowhere' is neither a group nor a host of the inventory",
        ),
        ("exporter: {image: r/x, hosts: [prod]}", "inventory.yaml:11: accessories.exporter.image: 'r/x' names no tag: pin the image by tag or digest, e.g. r/x:1.2"),
        (
            "exporter: {image: 'r/x@sha256:12', hosts: [prod]}",
            "inventory.yaml:11: accessories.exporter.image: 'r/x@sha256:12': a digest is sha256: and 64 hex digits",
        ),
        (
            "exporter: {image: r/x:1, host: [prod]}",
            "invalid inventory:\n  inventory.yaml:11: accessories.exporter.hosts: required key is missing\n"
            "  inventory.yaml:11: accessories.exporter.host: unknown key (did you mean 'hosts'?)",
        ),
        (
            "exporter: {image: r/x:1, hosts: [prod], secrets: [DOCKER_HOST]}",
            "inventory.yaml:11: accessories.exporter.secrets: 'DOCKER_HOST' cannot be a secret: the docker "
            "command on the host reads it itself",
        ),
    ],
)
def test_bad_accessories_are_refused_with_their_key_and_the_other_party(accessory: str, message: str | None) -> None:
    text = BASE + "accessories:\n  " + accessory + "\n"
    if message is None:
        config.parse(text)
    else:
        assert _error(text) == message


def test_an_accessory_named_like_the_proxy_or_on_its_ports_or_on_a_cluster_is_refused() -> None:
    proxied = BASE.replace("  name: web\n", "  name: deploy\n").replace(
        'container: {ports: ["8080:8080"]}', "proxy: {hosts: [example.com], app_port: 8080, https_port: 8443}"
    )
    assert _error(proxied + "accessories:\n  proxy: {image: r/x:1, hosts: [prod]}\n") == (
        "inventory.yaml:10: accessories: proxy: its container deploy-proxy would be named like the reverse proxy's"
    )
    assert _error(proxied + "accessories:\n  tls: {image: r/x:1, hosts: [prod], ports: ['8443:443']}\n") == (
        "inventory.yaml:10: accessories: tls.ports: '8443:443': host port 8443/tcp is taken: the proxy listens "
        "on it (app.proxy.https_port)"
    )
    cluster = BASE + "  swarm1:\n    swarm: {manager: m1}\n"
    assert _error(cluster + "accessories:\n  exporter: {image: r/x:1, hosts: [swarm1]}\n") == (
        "inventory.yaml:12: accessories: exporter.hosts: 'swarm1' is a Swarm cluster; accessories run on plain hosts"
    )


def test_accessory_secrets_come_from_the_environment() -> None:
    inventory = _inventory(EXPORTER + "    secrets: [TOKEN]\n")
    assert config.accessory_secrets(inventory, "exporter", {"TOKEN": "s3"}) == {"TOKEN": SecretStr("s3")}
    with pytest.raises(ConfigError, match=r"accessories\.exporter\.secrets names TOKEN, which is not set"):
        config.accessory_secrets(inventory, "exporter", {})


# ---------------------------------------------------------------- commands


APP = _inventory().app
SPEC = _inventory().accessories["exporter"]


def test_the_container_joins_the_apps_network_under_its_name() -> None:
    # fmt: off
    assert accessories.create(APP, "exporter", SPEC, {}) == RemoteCommand(
        (
            "docker", "create",
            "--name", "web-exporter",
            "--label", "deployer.accessory.app=web",
            "--label", "deployer.accessory=exporter",
            "--label", f"deployer.accessory.config={accessories.fingerprint(SPEC)}",
            "--restart", "unless-stopped",
            "--stop-timeout", "2",
            "--network", "web-accessories",
            "--network-alias", "exporter",
            "--publish", "9100:9100",
            "--volume", "exporter-data:/data",
            "--env", "LABEL=one",
            "r/exporter:1.0", "--port", "9100",
        ),
        purpose="docker create",
    )
    # fmt: on


def test_secret_values_travel_on_stdin_only() -> None:
    command = accessories.create(APP, "exporter", SPEC, {"TOKEN": SecretStr("a\nb=c")})
    assert command.argv[:6] == ("sh", "-c", commands._SECRETS_SCRIPT["create"], "sh", "TOKEN", "--")
    assert command.argv[-7:] == ("--env", "LABEL=one", "--env", "TOKEN", "r/exporter:1.0", "--port", "9100")
    assert command.stdin == base64.b64encode(b"a\nb=c") + b"\n"
    assert "a\nb=c" not in " ".join(command.argv)


def test_the_fingerprint_follows_the_settings_a_container_is_created_from() -> None:
    changed = SPEC.model_copy(update={"env": {"LABEL": "two"}})
    moved = SPEC.model_copy(update={"hosts": ["edge"]})
    assert accessories.fingerprint(changed) != accessories.fingerprint(SPEC)
    assert accessories.fingerprint(moved) == accessories.fingerprint(SPEC), "where it runs is not how"
    assert len(accessories.fingerprint(SPEC)) == 12


def test_network_pull_and_container_commands() -> None:
    join = accessories.join(APP, "web-v1")
    assert join.argv[:2] == ("sh", "-c") and join.argv[3:] == ("sh", "web-accessories", "web-v1")
    assert join.argv[2] == (
        'n=$1; shift; docker network inspect "$n" >/dev/null 2>&1 || '
        'docker network create --label deployer.accessory.app="$n" "$n" >/dev/null || '
        'docker network inspect "$n" >/dev/null || exit 1; for c in "$@"; do '
        "docker container inspect --format '{{json .NetworkSettings.Networks}}' \"$c\" | grep -qF \"\\\"$n\\\"\" "
        '|| docker network connect "$n" "$c" || exit 1; done'
    )
    assert accessories.join(APP).argv[3:] == ("sh", "web-accessories")
    pull = accessories.pull("r/exporter:1.0", login=None)
    assert pull.argv[3:] == ("sh", "r/exporter:1.0") and (pull.slow, pull.interruptible, pull.stdin) == (True, True, b"")
    assert pull.argv[2].endswith(
        'dk image inspect "$1" >/dev/null 2>&1 || { login || exit 1; dk pull -q "$1" >/dev/null; }'
    )
    logged = accessories.pull("reg:5000/x:1", login=Login("deploy", "reg:5000", SecretStr("pw")))
    assert logged.argv[3:] == ("sh", "reg:5000/x:1")
    assert logged.stdin == Login("deploy", "reg:5000", SecretStr("pw")).docker_config()
    assert accessories.rename("web-exporter", "web-exporter.previous").argv == (
        "docker", "container", "rename", "web-exporter", "web-exporter.previous",
    )  # fmt: skip
    assert accessories.discard("web-exporter.previous") == RemoteCommand(
        ("docker", "container", "rm", "--force", "web-exporter.previous"), ok_statuses=frozenset({0, 1})
    )
    remove = accessories.remove("web-exporter", 2)
    assert remove.argv[3:] == ("sh", "web-exporter", "2") and remove.waits == 2
    assert " -v" not in remove.argv[2] and "--volumes" not in remove.argv[2], "volumes are never removed"
    assert accessories.list_containers(APP) == RemoteCommand(
        ("docker", "container", "ls", "--all", "--no-trunc", "--filter", "label=deployer.accessory.app=web",
         "--format", "{{json .}}"),
        purpose="list the accessories",
    )  # fmt: skip


def test_listed_containers_are_parsed() -> None:
    output = "\n".join(
        [
            json.dumps({"Names": "web-exporter", "State": "running", "Status": "Up 2 minutes", "Image": "r/exporter:1.0",
                        "Labels": "deployer.accessory.app=web,deployer.accessory=exporter,deployer.accessory.config=abc"}),
            "not json",
            json.dumps(["a list"]),
        ]
    )  # fmt: skip
    assert accessories.parse_list(output) == {
        "web-exporter": accessories.Found("web-exporter", "exporter", "running", "Up 2 minutes", "r/exporter:1.0", "abc")
    }


_words = switch.lines


def test_a_release_joins_the_accessories_network_when_the_inventory_has_accessories() -> None:
    state = HostState((Container("web-v1", "v1", "sha256:1", "running", "0"),), (Entry("t", "rollout", "v1", "sha256:1", "me", "ok"),))
    v2 = Release("r/web", "v2", "sha256:2")
    plain = _words(switch.stop_first(switch.Move(APP, state, "v2", v2, accessories=True)).actions())
    assert plain[0].startswith("docker create --name web-v2 ") and plain[1:] == started(
        "web-v2", str(accessories.join(APP, "web-v2")), "docker container stop --time 10 web-v1"
    ), "the release joins the accessories' network in the round trip that starts it"
    back = _words(switch.stop_first(switch.Move(APP, state, "v0", accessories=True)).actions())
    assert back == started("web-v0", str(accessories.join(APP, "web-v0")), "docker container stop --time 10 web-v1"), (
        "a kept release joins too before it starts"
    )
    proxied = config.App.model_validate({"name": "web", "image": "r/web", "proxy": {"hosts": ["a.example"], "app_port": 80}})
    words = _words(switch.start_first(switch.Move(proxied, state, "v2", v2, accessories=True)).actions())
    assert "--network deploy-proxy" in words[0]
    assert words[1] == started("web-v2", str(accessories.join(proxied, "web-v2")), str(proxy.connect("web-v1")))[0]
    without = _words(switch.stop_first(switch.Move(APP, state, "v2", v2)).actions())
    assert not any("accessories" in word for word in without)


# ---------------------------------------------------------------- scripted hosts


@dataclass
class Accessory:
    name: str
    argv: tuple[str, ...]
    state: str = "created"

    def label(self, key: str) -> str:
        return dict(self.argv[i + 1].split("=", 1) for i, a in enumerate(self.argv) if a == "--label")[key]


@dataclass
class AccessoryHost(FakeHost):
    """A scripted host that also runs accessories (kept apart from the app's containers)."""

    accessories: dict[str, Accessory] = field(default_factory=dict)
    sick: set[str] = field(default_factory=set)  # env settings (K=V) with which an accessory fails its check
    joined: set[str] = field(default_factory=set)
    logs: str = "one\ntwo\n"

    def run(
        self, command: RemoteCommand, timeout: float | None = None, *, on_line: LineReader | None = None
    ) -> CommandResult:
        argv, purpose = command.argv, command.purpose
        target = argv[-1] if argv[0] == "docker" else ""
        if purpose == "docker create" and f"{accessories.APP_LABEL}=web" in argv:
            self.log.append(command)
            name = argv[argv.index("--name") + 1]
            assert name not in self.accessories, f"{name} exists"
            self.accessories[name] = Accessory(name, argv)
            return CommandResult(0, "", "")
        if purpose == "list the accessories":
            self.log.append(command)
            lines = [
                json.dumps({"Names": a.name, "State": a.state, "Status": a.state, "Image": a.argv[a.argv.index("--env") + 2]
                            if "--env" in a.argv else "", "Labels": ",".join(
                                a.argv[i + 1] for i, x in enumerate(a.argv) if x == "--label")})
                for a in self.accessories.values()
            ]  # fmt: skip
            return CommandResult(0, "\n".join(lines), "")
        if purpose == "join the accessories network":
            self.log.append(command)
            self.joined |= set(argv[5:])
            return CommandResult(0, "", "")
        if purpose == "remove the accessory":
            self.log.append(command)
            found = self.accessories.pop(argv[4], None)
            self.accessories.pop(argv[4] + ".previous", None)
            return CommandResult(0, "removed\n" if found else "absent\n", "")
        if purpose == "docker logs":
            self.log.append(command)
            return CommandResult(0, self.logs, "")
        if purpose == "health probe" and "10.0.1.1" in argv[4]:
            self.log.append(command)
            running = [a for a in self.accessories.values() if a.state == "running"]
            ok = running and not any(f"--env {s}" in " ".join(a.argv) for a in running for s in self.sick)
            return CommandResult(0, "200" if ok else "503", "")
        if target in self.accessories or argv[:3] == ("docker", "container", "rename"):
            self.log.append(command)
            return self._accessory(argv)
        return super().run(command, timeout, on_line=on_line)

    def _accessory(self, argv: tuple[str, ...]) -> CommandResult:
        verb, name = argv[2], argv[-1]
        if verb == "rename":
            old, new = argv[3], argv[4]
            self.accessories[new] = self.accessories.pop(old)
            self.accessories[new].name = new
        elif verb == "start":
            self.accessories[name].state = "running"
        elif verb == "stop":
            self.accessories[name].state = "exited"
        elif verb == "rm":
            self.accessories.pop(name, None)
        elif verb == "inspect":
            return CommandResult(0, f"{self.accessories[name].state}|0|0||10.0.1.1 |2026-01-01T00:00:00Z\n", "")
        elif verb == "logs":
            return CommandResult(0, "exporter: bad setting\n", "")
        return CommandResult(0, "", "")

    def running(self) -> dict[str, str]:
        return {a.name: " ".join(a.argv[i + 1] for i, x in enumerate(a.argv) if x == "--env") for a in self.accessories.values() if a.state == "running"}


def _hosts(names: list[str]) -> list[Host]:
    return [Host(name, name, 22, "root") for name in names]


def _fleet(names: tuple[str, ...] = ("h1", "h2", "h3")) -> dict[str, AccessoryHost]:
    return {name: AccessoryHost(name, healthy={"v1", "v2", "v3"}) for name in names}


def _run(
    fakes: dict[str, AccessoryHost],
    action: Callable[[fleet_module.Fleet], T],
    inventory: config.Inventory | None = None,
    cancel: threading.Event | None = None,
) -> T:
    with fleet_module.open_fleet(
        inventory or _inventory(),
        _hosts(list(fakes)),
        connect=lambda host: fakes[host.name],
        out=Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
        cancel=cancel or threading.Event(),
        lock_for="test",
    ) as fleet:
        return action(fleet)


def _boot(inventory: config.Inventory | None = None) -> Callable[[fleet_module.Fleet], list[accessories.Row]]:
    return lambda fleet: accessories.boot(fleet, ["exporter"], {}, {})


def _outcomes(rows: list[accessories.Row]) -> list[tuple[str, str, str]]:
    return [(row.host, row.accessory, row.state) for row in rows]


def _rollout(release: Release) -> Callable[[fleet_module.Fleet], object]:
    return lambda fleet: PlainHosts().rollout(fleet, release, password=None, secrets={})


def _purposes(fake: FakeHost) -> list[str]:
    return [command.purpose or " ".join(command.argv[:3]) for command in fake.log]


def test_boot_starts_the_accessory_where_missing_and_leaves_a_running_one_alone() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(Release("r/web", "v1", "sha256:1")))
    del fakes["h2"].log[:]
    rows = _run(fakes, _boot())
    assert _outcomes(rows) == [("h1", "exporter", "created"), ("h2", "exporter", "created"), ("h3", "exporter", "created")]
    assert _purposes(fakes["h2"]) == [
        "take the lock and read containers and history",
        "join the accessories network",
        "list the accessories",
        "docker pull",
        "docker create",
        "docker container start",
        "docker container inspect",
        "health probe",
        "record history",
        "release the deploy lock",
    ]
    assert fakes["h2"].joined == {"web-v1"}, "the running release joins the accessories network"
    assert fakes["h2"].running() == {"web-exporter": "LABEL=one"}
    assert json.loads(fakes["h2"].history[-1])["action"] == "accessory boot"
    assert json.loads(fakes["h2"].history[-1])["release"] == "exporter"

    del fakes["h2"].log[:]
    again = _run(fakes, _boot())
    assert _outcomes(again) == [("h1", "exporter", "running"), ("h2", "exporter", "running"), ("h3", "exporter", "running")]
    assert again[0].config == "current"
    assert "docker create" not in _purposes(fakes["h2"]) and "record history" not in _purposes(fakes["h2"])

    fakes["h3"].accessories["web-exporter"].state = "exited"
    restarted = _run(fakes, _boot())
    assert restarted[2].state == "started" and fakes["h3"].running() == {"web-exporter": "LABEL=one"}


def test_a_failed_boot_is_reported_per_host_and_fails_the_run() -> None:
    fakes = _fleet()
    fakes["h2"].sick = {"LABEL=one"}
    with pytest.raises(accessories.AccessoryError) as caught:
        _run(fakes, _boot())
    assert caught.value.exit_code == 7
    assert _outcomes(caught.value.rows) == [("h1", "exporter", "created"), ("h2", "exporter", "failed"), ("h3", "exporter", "created")]
    assert caught.value.message.startswith(
        "accessory boot failed on 1 host(s):\n  h2: exporter: web-exporter not healthy within 0.3 s: "
        "GET http://10.0.1.1:9100/metrics answered 503"
    )
    assert json.loads(fakes["h2"].history[-1])["result"] == "failed"


def _changed() -> config.Inventory:
    return _inventory(EXPORTER.replace("LABEL: one", "LABEL: two"))


def test_reboot_recreates_one_host_at_a_time_with_the_current_settings() -> None:
    fakes = _fleet()
    _run(fakes, _boot())
    for fake in fakes.values():
        del fake.log[:]
    status = _run(fakes, lambda fleet: accessories.status(fleet), _changed())
    assert [row.config for row in status] == ["changed: reboot to apply"] * 3
    for fake in fakes.values():
        del fake.log[:]
    rows = _run(fakes, lambda fleet: accessories.reboot(fleet, "exporter", {}, {}), _changed())
    assert _outcomes(rows) == [("h1", "exporter", "rebooted"), ("h2", "exporter", "rebooted"), ("h3", "exporter", "rebooted")]
    assert all(fake.running() == {"web-exporter": "LABEL=two"} for fake in fakes.values())
    assert all(set(fake.accessories) == {"web-exporter"} for fake in fakes.values()), "the previous one is gone"
    words = [c.render() for c in fakes["h1"].log if c.argv[0] == "docker"]
    assert words[1:5] == [
        "docker container rm --force web-exporter.previous",
        "docker container stop --time 2 web-exporter",
        "docker container rename web-exporter web-exporter.previous",
        accessories.create(APP, "exporter", _changed().accessories["exporter"], {}).render(),
    ]
    assert words[-1] == "docker container rm --force web-exporter.previous"
    assert json.loads(fakes["h3"].history[-1])["action"] == "accessory reboot"


def test_a_failed_health_gate_puts_the_previous_container_back_and_stops_the_reboot() -> None:
    fakes = _fleet()
    _run(fakes, _boot())
    fakes["h2"].sick = {"LABEL=two"}
    with pytest.raises(accessories.AccessoryError) as caught:
        _run(fakes, lambda fleet: accessories.reboot(fleet, "exporter", {}, {}), _changed())
    assert _outcomes(caught.value.rows) == [
        ("h1", "exporter", "rebooted"),
        ("h2", "exporter", "reverted"),
        ("h3", "exporter", "untouched"),
    ]
    assert caught.value.rows[1].detail.endswith("; the previous container was put back")
    assert "exporter: bad setting" in caught.value.rows[1].detail, "its logs explain the failure"
    assert {name: fake.running() for name, fake in fakes.items()} == {
        "h1": {"web-exporter": "LABEL=two"},
        "h2": {"web-exporter": "LABEL=one"},
        "h3": {"web-exporter": "LABEL=one"},
    }
    assert set(fakes["h2"].accessories) == {"web-exporter"}


def test_reboot_interrupted_leaves_the_hosts_after_untouched() -> None:
    fakes = _fleet()
    _run(fakes, _boot())
    cancel = threading.Event()

    def stop_then_reboot(fleet: fleet_module.Fleet) -> list[accessories.Row]:
        cancel.set()
        return accessories.reboot(fleet, "exporter", {}, {})

    with pytest.raises(Interrupted, match="accessory reboot interrupted; h1: untouched, h2: untouched, h3: untouched"):
        _run(fakes, stop_then_reboot, _changed(), cancel=cancel)
    assert all(fake.running() == {"web-exporter": "LABEL=one"} for fake in fakes.values())


def test_remove_stops_and_removes_the_container_and_records_it() -> None:
    fakes = _fleet()
    _run(fakes, _boot())
    del fakes["h3"].accessories["web-exporter"]
    rows = _run(fakes, lambda fleet: accessories.remove_all(fleet, "exporter"))
    assert _outcomes(rows) == [("h1", "exporter", "removed"), ("h2", "exporter", "removed"), ("h3", "exporter", "absent")]
    assert all(not fake.accessories for fake in fakes.values())
    assert json.loads(fakes["h1"].history[-1])["action"] == "accessory remove"
    assert json.loads(fakes["h3"].history[-1])["action"] == "accessory boot", "nothing to record where it was absent"


def test_rollout_rollback_and_pruning_leave_accessories_alone() -> None:
    digest = "sha256:" + "1" * 64
    inventory = _inventory(EXPORTER.replace("image: r/exporter:1.0", f"image: r/web@{digest}"))
    fakes = _fleet()
    for n in (1, 2):
        _run(fakes, _rollout(Release("r/web", f"v{n}", digest if n == 1 else f"sha256:{n}")), inventory)
    _run(fakes, _boot(), inventory)
    before = {name: dict(fake.accessories) for name, fake in fakes.items()}
    for fake in fakes.values():
        del fake.log[:]
    _run(fakes, _rollout(Release("r/web", "v3", "sha256:3")), inventory)  # prunes v1
    removed = [c.argv for c in fakes["h1"].log if c.argv[:3] == ("docker", "image", "rm")]
    assert removed == [], "v1's image is the accessory's: not pruned"
    assert fakes["h1"].joined >= {"web-v1", "web-v3"}
    report = _run(fakes, lambda fleet: PlainHosts().rollback(fleet, None), inventory)
    assert report.release == "v2", "history lines about accessories are not releases"
    assert {name: dict(fake.accessories) for name, fake in fakes.items()} == before
    assert all(fake.running()["web-exporter"] == "LABEL=one" for fake in fakes.values())
    touched = [c.argv for f in fakes.values() for c in f.log if "web-exporter" in c.argv and c.argv[2] != "inspect"]
    assert touched == [], "no rollout nor rollback command names the accessory"


def test_pruning_removes_old_release_images_that_no_accessory_uses() -> None:
    fakes = _fleet(("h1",))
    for n in (1, 2, 3):
        _run(fakes, _rollout(Release("r/web", f"v{n}", f"sha256:{n}")))
    removed = [c.argv for c in fakes["h1"].log if c.argv[:3] == ("docker", "image", "rm")]
    assert removed == [("docker", "image", "rm", "r/web:v1", "r/web@sha256:1")]


def test_status_lists_placed_absent_and_forgotten_accessories() -> None:
    fakes = _fleet()
    _run(fakes, _boot())
    del fakes["h2"].accessories["web-exporter"]
    two = _inventory(EXPORTER + "  cache:\n    image: r/cache:7\n    hosts: [h1]\n")
    fakes["h3"].accessories["web-old"] = Accessory("web-old", ("--label", "deployer.accessory=old"), "exited")
    rows = _run(fakes, lambda fleet: accessories.status(fleet), two)
    assert [(r.host, r.accessory, r.state, r.config) for r in rows] == [
        ("h1", "exporter", "running", "current"),
        ("h1", "cache", "absent", "-"),
        ("h2", "exporter", "absent", "-"),
        ("h3", "exporter", "running", "current"),
        ("h3", "old", "exited", "not in inventory"),
    ]


def test_logs_are_prefixed_by_host_and_follow_the_accessory_container() -> None:
    fakes = _fleet(("h1", "h2"))
    for fake in fakes.values():
        fake.stream_output = b"one\ntwo\n"
    out = io.StringIO()

    def show(follow: bool) -> Callable[[fleet_module.Fleet], None]:
        def action(fleet: fleet_module.Fleet) -> None:
            fleet.out = Output(verbosity=-1, stdout=out, stderr=io.StringIO())
            accessories.show_logs(fleet, "exporter", 7, follow=follow)

        return action

    _run(fakes, show(False))
    assert sorted(out.getvalue().splitlines()) == ["h1 | one", "h1 | two", "h2 | one", "h2 | two"]
    assert fakes["h1"].log[-2] == commands.follow_logs("web-exporter", follow=False, tail=7, since=None)
    _run(fakes, show(True))
    assert fakes["h2"].log[-2] == commands.follow_logs("web-exporter", follow=True, tail=7, since=None)
    assert fakes["h1"].lock is None, "the lock is released"


# ---------------------------------------------------------------- the command line


def _cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, fakes: dict[str, AccessoryHost],
    *args: str, extra: str = EXPORTER,
) -> tuple[int, str, str]:
    path = tmp_path / "inventory.yaml"
    path.write_text(BASE + extra + "ssh: {config_file: /nonexistent}\n")
    monkeypatch.setattr(transport, "connector", lambda inventory, **options: lambda host: fakes[host.name])
    return entrypoint.run(monkeypatch, capsys, "-i", str(path), *args)


def test_remove_asks_first_and_does_nothing_without_a_yes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fakes = _fleet()
    _run(fakes, _boot())
    logged = {name: len(fake.log) for name, fake in fakes.items()}
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, out, err = _cli(monkeypatch, capsys, tmp_path, fakes, "accessory", "remove", "exporter")
    assert (code, out) == (2, "")
    assert err == (
        "remove exporter from h1, h2, h3? [y/N]: error: not confirmed, so nothing was removed\n"
        "  hint: pass --yes to remove without asking\n"
    )
    assert {name: len(fake.log) for name, fake in fakes.items()} == logged, "no host was asked anything"
    code, out, err = _cli(monkeypatch, capsys, tmp_path, fakes, "accessory", "remove", "exporter", "--yes", "-H", "h1")
    assert code == 0, err
    assert "h1" in out and "removed" in out
    assert set(fakes["h1"].accessories) == set() and set(fakes["h2"].accessories) == {"web-exporter"}


def test_status_lists_accessories_apart_from_releases(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fakes = _fleet()
    _run(fakes, _rollout(Release("r/web", "v1", "sha256:1")))
    _run(fakes, _boot())
    code, out, err = _cli(monkeypatch, capsys, tmp_path, fakes, "status", "--hosts", "prod", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [row["release"] for row in data["hosts"]] == ["v1"] * 3
    assert [(row["host"], row["accessory"], row["state"]) for row in data["accessories"]] == [
        ("h1", "exporter", "running"), ("h2", "exporter", "running"), ("h3", "exporter", "running"),
    ]  # fmt: skip
    code, out, _ = _cli(monkeypatch, capsys, tmp_path, fakes, "status", "--hosts", "prod")
    assert code == 0 and "accessories" in out and out.index("accessories") > out.index("status")
    code, out, _ = _cli(monkeypatch, capsys, tmp_path, fakes, "status", "--hosts", "prod", "--json", extra="")
    assert code == 0 and "accessories" not in json.loads(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["accessory", "boot", "cache"], "error: no accessory named 'cache' in the inventory\n  hint: accessories: exporter\n"),
        (
            ["accessory", "boot", "exporter", "--hosts", "edge"],
            "error: --hosts edge selects no host exporter runs on, so nothing was changed\n  hint: it runs on: h1, h2, h3\n",
        ),
        (["accessory", "reboot", "all"], "error: reboot takes one accessory at a time\n  hint: deploy accessory reboot NAME\n"),
    ],
)
def test_bad_accessory_usage_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    fakes = _fleet()
    assert _cli(monkeypatch, capsys, tmp_path, fakes, *args) == (2, "", message)
    assert all(not fake.log for fake in fakes.values())


def test_a_colliding_inventory_stops_every_verb_before_any_host_is_reached(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fakes = _fleet()
    colliding = EXPORTER.replace('ports: ["9100:9100"]', 'ports: ["8080:9100"]')
    code, out, err = _cli(monkeypatch, capsys, tmp_path, fakes, "accessory", "boot", "all", extra=colliding)
    assert (code, out) == (2, "")
    assert "exporter.ports: '8080:9100': host port 8080/tcp is taken: app.container.ports publishes it ('8080:8080')" in err
    assert all(not fake.log for fake in fakes.values())
