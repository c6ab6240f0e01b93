"""Roles: the schema, what each role runs and where, and one rollout moving every role of a host."""

from __future__ import annotations

import io
import json
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployer import commands, config, health, proxy, roles, state, switch
from deployer import fleet as fleet_module
from deployer.config import Healthcheck
from deployer.errors import ConfigError, RolloutError, UsageError
from deployer.inventory import Host
from deployer.output import Output
from deployer.plan import Release
from deployer.report import Report, StatusRow
from deployer.switch import Route
from deployer.targets import operate
from deployer.targets.plain import PlainHosts

from .fakehost import FakeHost

V1 = Release("r/web", "v1", "sha256:1")
V2 = Release("r/web", "v2", "sha256:2")
V3 = Release("r/web", "v3", "sha256:3")

ROLES = """\
app:
  name: web
  image: r/web
  container: {ports: ["8080:8080"], env: {LOG: info, MODE: web}}
  healthcheck: {path: /health, port: 8080, timeout: 0.3, interval: 0.01}
  keep_releases: 1
  roles:
    web: {hosts: [prod]}
    worker: {hosts: [prod, workers], cmd: [celery, worker], env: {MODE: worker}}
hosts:
  prod: [h1, h2]
  workers: [h3]
"""


def _parse(text: str) -> config.Inventory:
    return config.parse(textwrap.dedent(text), Path("inv.yaml"))


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    return caught.value.message


def _host(name: str) -> Host:
    return Host(name, name, 22, "root")


# ---------------------------------------------------------------- the schema


MINIMAL = "app:\n  name: web\n  image: r/web\n{app}hosts:\n  prod: [h1]\n  workers: [h2]\n  c: {{swarm: {{manager: m}}}}\n"


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (
            "  roles:\n    worker: {hosts: [prod, nope]}\n",
            "inv.yaml:5: app.roles.worker.hosts[1]: 'nope' is neither a group nor a host of the inventory",
        ),
        (
            "  roles:\n    worker: {hosts: [c]}\n",
            "inv.yaml:5: app.roles.worker.hosts[0]: 'c' is a Swarm cluster; roles run on plain hosts only "
            "(a cluster runs the app as one service)",
        ),
        (
            "  roles:\n    worker: {hosts: [prod], proxy: true}\n",
            "inv.yaml:1: app: roles.worker.proxy: a role behind the proxy needs app.proxy",
        ),
        (
            "  roles:\n    Worker: {hosts: [prod]}\n",
            "inv.yaml:1: app: roles: 'Worker' must be 1 to 32 lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit",
        ),
        (
            "  roles:\n    worker: {hosts: [prod], cmnd: [x]}\n",
            "inv.yaml:5: app.roles.worker.cmnd: unknown key (did you mean 'cmd'?)",
        ),
        ("  roles:\n    worker: {cmd: [x]}\n", "inv.yaml:5: app.roles.worker.hosts: required key is missing"),
        (
            "  roles:\n    worker: {hosts: [prod], cmd: []}\n",
            "inv.yaml:5: app.roles.worker.cmd: List should have at least 1 item after validation, not 0",
        ),
        (
            "  roles:\n    worker: {hosts: [prod, prod]}\n",
            "inv.yaml:5: app.roles.worker.hosts: a group or host is listed twice",
        ),
        (
            "  roles:\n    worker: {hosts: [prod], ports: ['99999:1']}\n",
            "inv.yaml:5: app.roles.worker.ports: '99999:1': a port is a number from 1 to 65535",
        ),
        (
            "  container: {secrets: [DB]}\n  roles:\n    worker: {hosts: [prod], env: {DB: x}}\n",
            "inv.yaml:1: app: roles.worker.env: DB: set in both env and container.secrets",
        ),
        (
            "  proxy: {hosts: [example.com], app_port: 8080}\n  roles:\n    web: {hosts: [prod]}\n"
            "    admin: {hosts: [workers], proxy: true}\n",
            "inv.yaml:1: app: roles: web and admin are both behind the proxy; app.proxy routes its host "
            "names to one role (set proxy: false on the others)",
        ),
        (
            "  proxy: {hosts: [example.com], app_port: 8080}\n  roles:\n    worker: {hosts: [prod]}\n",
            "inv.yaml:1: app: roles: app.proxy is set but no role is behind it; set proxy: true on the "
            "role that serves HTTP",
        ),
        (
            "  proxy: {hosts: [example.com], app_port: 8080}\n  roles:\n    web: {hosts: [prod], ports: ['80:80']}\n",
            "inv.yaml:1: app: roles.web.ports: a role behind the proxy publishes no host port (two releases "
            "run side by side during a switch)",
        ),
    ],
)
def test_invalid_roles_are_refused_with_their_key_path(app: str, expected: str) -> None:
    assert _error(MINIMAL.format(app=app)) == expected


def test_a_role_may_name_a_host_of_any_group() -> None:
    inventory = _parse(MINIMAL.format(app="  roles:\n    worker: {hosts: [h2]}\n"))
    assert list(inventory.app.roles) == ["worker"]


# ---------------------------------------------------------------- resolution


def test_roles_merge_their_settings_over_the_app_container() -> None:
    app = _parse(ROLES).app
    web, worker = roles.of(app)
    assert (web.name, web.cmd, web.proxy, web.hosts) == ("web", None, False, ("prod",))
    assert web.container.env == {"LOG": "info", "MODE": "web"}
    assert web.container.ports == ["8080:8080"], "web publishes the app's ports"
    assert web.healthcheck == app.healthcheck, "web is gated by app.healthcheck"
    assert (worker.name, worker.cmd, worker.proxy) == ("worker", ("celery", "worker"), False)
    assert worker.container.env == {"LOG": "info", "MODE": "worker"}
    assert worker.container.ports == [], "another role publishes nothing unless it says so"
    assert worker.healthcheck is None, "another role only has to keep running"
    assert worker.container.volumes == app.container.volumes


def test_an_app_without_roles_is_the_web_role_everywhere() -> None:
    app = _parse("app: {name: web, image: r/web, proxy: {hosts: [a.example], app_port: 80}}\nhosts: {prod: [h1]}\n").app
    (only,) = roles.of(app)
    assert only == roles.Role("web", app.container, None, app.healthcheck, True, None)


def test_a_role_behind_the_proxy_uses_app_healthcheck_and_its_own_when_given() -> None:
    app = _parse(
        "app:\n  name: web\n  image: r/web\n  proxy: {hosts: [a.example], app_port: 80}\n"
        "  healthcheck: {path: /up, port: 80}\n"
        "  roles:\n    api: {hosts: [prod], proxy: true}\n"
        "    jobs: {hosts: [prod], healthcheck: {timeout: 5}}\n"
        "hosts: {prod: [h1]}\n"
    ).app
    api, jobs = roles.of(app)
    assert api.proxy and api.healthcheck == Healthcheck(path="/up", port=80)
    assert not jobs.proxy and jobs.healthcheck == Healthcheck(timeout=5)


def test_placement_says_which_roles_run_on_which_host() -> None:
    inventory = _parse(ROLES)
    hosts = [_host(name) for name in ("h1", "h2", "h3")]
    placed = roles.placement(inventory, hosts)
    assert {host.name: [r.name for r in found] for host, found in placed.items()} == {
        "h1": ["web", "worker"],
        "h2": ["web", "worker"],
        "h3": ["worker"],
    }
    only_web = roles.placement(inventory, hosts, frozenset({"web"}))
    assert {host.name: [r.name for r in found] for host, found in only_web.items()} == {"h1": ["web"], "h2": ["web"]}
    assert [h.name for h in roles.narrow(inventory, hosts, frozenset({"web"}))] == ["h1", "h2"]
    with pytest.raises(UsageError) as caught:
        roles.narrow(inventory, [_host("h3")], frozenset({"web"}))
    assert caught.value.message == "no host selected by --hosts runs web; nothing was changed"


def test_roles_flag_names_known_roles_only() -> None:
    app = _parse(ROLES).app
    assert roles.select(app, None) is None
    assert roles.select(app, "worker, web") == frozenset({"web", "worker"})
    with pytest.raises(UsageError) as caught:
        roles.select(app, "worker,cron")
    assert caught.value.message == "--roles: 'cron': no such role of web"
    assert caught.value.hint == "roles: web, worker"


# ---------------------------------------------------------------- names, labels, history: upgrade-compatible


def test_container_names_keep_the_web_role_as_an_app_without_roles() -> None:
    app = _parse(ROLES).app
    assert commands.container_name(app, "v1") == "web-v1"
    assert commands.container_name(app, "v1", "web") == "web-v1"
    assert commands.container_name(app, "v1", "worker") == "web-worker-v1"


def test_state_written_before_roles_reads_as_the_web_role() -> None:
    app = _parse(ROLES).app
    assert state.state_dir(app) == "/var/lib/deploy/apps/web", "one state directory per app, roles or not"
    old_line = json.dumps({"Names": "web-v1", "State": "running", "Labels": "deployer.app=web,deployer.release=v1,deployer.digest=sha256:1"})
    worker_line = json.dumps(
        {"Names": "web-worker-v1", "State": "exited", "Labels": "deployer.app=web,deployer.release=v1,deployer.digest=sha256:1,deployer.role=worker"}
    )
    history = '{"action": "rollout", "by": "a@b", "digest": "sha256:1", "previous": null, "release": "v1", "result": "ok", "time": "t"}'
    found = state.parse_state(f"{old_line}\n{worker_line}\n---\n{history}\n")
    assert [(c.name, c.role) for c in found.containers] == [("web-v1", "web"), ("web-worker-v1", "worker")]
    web = found.of_role("web")
    assert [c.name for c in web.containers] == ["web-v1"] and web.current == "v1"
    assert web.activations() == ["v1"], "a history line without a role is the web role's"
    worker = found.of_role("worker")
    assert worker.running is None and worker.activations() == []
    assert roles.running(found) == {"web": "web-v1"}


def test_history_lines_name_a_role_other_than_web_only() -> None:
    web = state.Entry("t", "rollout", "v1", "sha256:1", "a@b", "ok")
    assert "role" not in json.loads(web.to_json()), "web's lines are written as before roles"
    worker = state.Entry("t", "rollout", "v1", "sha256:1", "a@b", "ok", role="worker")
    assert json.loads(worker.to_json())["role"] == "worker"
    assert (web.role_name, worker.role_name) == ("web", "worker")


def test_a_role_container_gets_its_label_command_env_and_no_image_healthcheck() -> None:
    app = _parse(ROLES).app
    web, worker = roles.of(app)
    assert commands.create_container(app, "v1", "r/web@sha256:1", "sha256:1", {}, role=web) == commands.create_container(
        app, "v1", "r/web@sha256:1", "sha256:1", {}
    ), "the web role is created as an app without roles, plus its env"
    created = commands.create_container(app, "v1", "r/web@sha256:1", "sha256:1", {}, role=worker)
    assert created.argv == (
        "docker", "create", "--name", "web-worker-v1",
        "--label", "deployer.app=web", "--label", "deployer.release=v1", "--label", "deployer.digest=sha256:1",
        "--restart", "unless-stopped", "--stop-timeout", "10",
        "--label", "deployer.role=worker", "--no-healthcheck",
        "--env", "LOG=info", "--env", "MODE=worker",
        "r/web@sha256:1", "celery", "worker",
    )  # fmt: skip
    hidden = commands.create_container(app, "v1", "r/web@sha256:1", "sha256:1", {"DB": SecretStr("pw")}, role=worker)
    assert hidden.argv[-5:] == ("--env", "DB", "r/web@sha256:1", "celery", "worker")
    assert b"pw" not in b"".join(arg.encode() for arg in hidden.argv)


def test_the_proxy_role_switches_start_first_and_the_others_stop_first() -> None:
    app = _parse(
        "app:\n  name: web\n  image: r/web\n  proxy: {hosts: [a.example], app_port: 8080}\n"
        "  roles:\n    web: {hosts: [prod]}\n    worker: {hosts: [prod], cmd: [w]}\n"
        "hosts: {prod: [h1]}\n"
    ).app
    web, worker = roles.of(app)
    empty = state.HostState((), ())
    front = switch.plan(switch.Move(app, empty, "v1", V1, role=web))
    assert Route("web-v1") in front.actions()
    created = front.actions()[0]
    assert isinstance(created, commands.RemoteCommand) and created.argv[created.argv.index("--network") + 1] == proxy.NETWORK
    back = switch.plan(switch.Move(app, empty, "v1", V1, role=worker))
    assert not any(isinstance(action, Route) for action in back.actions())
    assert back.actions()[-1] == switch.started("web-worker-v1", "worker")


def test_the_keeps_running_gate_is_described_in_dry_runs() -> None:
    assert health.describe(None) == "running, without a restart, for 3 s"


# ---------------------------------------------------------------- rollouts on scripted hosts


@pytest.fixture
def _no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "RUNNING_GRACE", 0.0)


def _fakes() -> dict[str, FakeHost]:
    return {name: FakeHost(name, healthy={"v1", "v2", "v3"}) for name in ("h1", "h2", "h3")}


def _run(
    fakes: dict[str, FakeHost],
    action: Callable[[fleet_module.Fleet], Report],
    only: frozenset[str] | None = None,
    text: str = ROLES,
) -> Report:
    inventory = config.parse(text)
    with fleet_module.open_fleet(
        inventory,
        [_host(name) for name in fakes],
        connect=lambda host: fakes[host.name],
        out=Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
        cancel=threading.Event(),
        lock_for="test",
        roles=only,
    ) as fleet:
        return action(fleet)


def _rollout(release: Release) -> Callable[[fleet_module.Fleet], Report]:
    return lambda fleet: PlainHosts().rollout(fleet, release, password=None, secrets={})


def _serving(fakes: dict[str, FakeHost]) -> dict[str, tuple[str | None, str | None]]:
    return {name: (fake.serving("web"), fake.serving("worker")) for name, fake in fakes.items()}


def _history(fake: FakeHost) -> list[tuple[str | None, str, str]]:
    return [(line.get("role"), line["release"], line["result"]) for line in map(json.loads, fake.history)]


@pytest.mark.usefixtures("_no_grace")
def test_one_rollout_moves_every_role_of_every_host() -> None:
    fakes = _fakes()
    report = _run(fakes, _rollout(V1))
    assert [(h.host, h.outcome, h.serving) for h in report.hosts] == [
        ("h1", "switched", "v1"),
        ("h2", "switched", "v1"),
        ("h3", "switched", "v1"),
    ]
    assert _serving(fakes) == {"h1": ("v1", "v1"), "h2": ("v1", "v1"), "h3": (None, "v1")}
    assert fakes["h1"].containers["web-worker-v1"].argv[-2:] == ("celery", "worker")
    assert _history(fakes["h1"]) == [(None, "v1", "ok"), ("worker", "v1", "ok")]
    assert _history(fakes["h3"]) == [("worker", "v1", "ok")]
    pulls = [c for c in fakes["h1"].log if c.purpose == "docker pull"]
    assert len(pulls) == 1, "one pull per host, whatever its roles"


@pytest.mark.usefixtures("_no_grace")
def test_roles_flag_moves_only_those_roles() -> None:
    fakes = _fakes()
    _run(fakes, _rollout(V1))
    report = _run(fakes, _rollout(V2), only=frozenset({"worker"}))
    assert report.ok
    assert _serving(fakes) == {"h1": ("v1", "v2"), "h2": ("v1", "v2"), "h3": (None, "v2")}
    assert _history(fakes["h1"])[-1] == ("worker", "v2", "ok")
    assert len(fakes["h1"].history) == 3, "no line about web"


@pytest.mark.usefixtures("_no_grace")
def test_a_role_that_fails_its_gate_puts_every_role_of_every_switched_host_back() -> None:
    fakes = _fakes()
    _run(fakes, _rollout(V1))
    fakes["h2"].crashing.add(("worker", "v2"))
    with pytest.raises(RolloutError) as caught:
        _run(fakes, _rollout(V2))
    assert caught.value.message == "rollout of v2 failed on 1 host(s); every switched host was put back"
    assert _serving(fakes) == {"h1": ("v1", "v1"), "h2": ("v1", "v1"), "h3": (None, "v1")}
    report = caught.value.report
    assert report is not None
    assert [(h.host, h.outcome, h.serving) for h in report.hosts] == [
        ("h1", "reverted", "v1"),
        ("h2", "failed", "v1"),
        ("h3", "untouched", "v1"),
    ]
    assert "web-worker-v2 the container exited with code 0" in report.hosts[1].detail
    assert _history(fakes["h1"])[-2:] == [(None, "v2", "reverted"), ("worker", "v2", "reverted")]
    assert _history(fakes["h2"])[-2:] == [(None, "v2", "failed"), ("worker", "v2", "failed")]


@pytest.mark.usefixtures("_no_grace")
def test_rollback_puts_each_role_back_from_what_the_host_kept() -> None:
    fakes = _fakes()
    _run(fakes, _rollout(V1))
    _run(fakes, _rollout(V2))
    _run(fakes, _rollout(V3), only=frozenset({"worker"}))
    report = _run(fakes, lambda fleet: PlainHosts().rollback(fleet, None))
    assert report.release == "mixed"
    assert _serving(fakes) == {"h1": ("v1", "v2"), "h2": ("v1", "v2"), "h3": (None, "v2")}
    assert [(h.host, h.serving) for h in report.hosts] == [("h1", "web v1, worker v2"), ("h2", "web v1, worker v2"), ("h3", "v2")]


@pytest.mark.usefixtures("_no_grace")
def test_pruning_keeps_what_each_role_needs() -> None:
    fakes = _fakes()
    for release in (V1, V2):
        _run(fakes, _rollout(release))
    _run(fakes, _rollout(V3), only=frozenset({"worker"}))
    assert set(fakes["h1"].containers) == {"web-v1", "web-v2", "web-worker-v2", "web-worker-v3"}, (
        "keep_releases: 1 per role"
    )
    assert _image_removals(fakes["h1"]) == [], "v1's image stays while web keeps v1"
    _run(fakes, _rollout(Release("r/web", "v4", "sha256:4")))
    assert set(fakes["h1"].containers) == {"web-v2", "web-v4", "web-worker-v3", "web-worker-v4"}
    assert _image_removals(fakes["h1"]) == [("r/web:v1", "r/web@sha256:1")], "v2's stays: web keeps it"


def _image_removals(fake: FakeHost) -> list[tuple[str, ...]]:
    return [c.argv[3:] for c in fake.log if c.argv[:3] == ("docker", "image", "rm")]


@pytest.mark.usefixtures("_no_grace")
def test_status_has_a_row_per_role() -> None:
    fakes = _fakes()
    _run(fakes, _rollout(V1))
    rows = _run(fakes, lambda fleet: PlainHosts().status(fleet, fleet.hosts))  # type: ignore[arg-type,return-value]
    assert [(row.host, row.role, row.release) for row in rows] == [  # type: ignore[attr-defined]
        ("h1", "web", "v1"),
        ("h1", "worker", "v1"),
        ("h2", "web", "v1"),
        ("h2", "worker", "v1"),
        ("h3", "worker", "v1"),
    ]
    assert StatusRow("h1", role="worker").to_dict()["role"] == "worker"


def test_an_app_without_roles_rolls_out_as_before() -> None:
    fakes = _fakes()
    text = "app:\n  name: web\n  image: r/web\n  healthcheck: {path: /health, port: 8080, timeout: 0.3, interval: 0.01}\nhosts: {prod: [h1, h2, h3]}\n"
    _run(fakes, _rollout(V1), text=text)
    assert {name: set(fake.containers) for name, fake in fakes.items()} == {n: {"web-v1"} for n in fakes}
    assert json.loads(fakes["h1"].history[0]).keys() == {"time", "action", "release", "digest", "by", "result", "previous"}


def test_a_swarm_cluster_refuses_an_app_with_roles() -> None:
    from deployer.config import HostSpec, Swarm
    from deployer.targets.swarm import SwarmCluster

    inventory = _parse(ROLES)
    manager = Host("c", "m", 22, "root", swarm=Swarm(manager=HostSpec(address="m")))
    fleet = fleet_module.Fleet(inventory, [manager], Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()), threading.Event())
    with pytest.raises(UsageError) as caught:
        SwarmCluster().rollout(fleet, V1, password=None, secrets={})
    assert caught.value.message == (
        "c: a Swarm cluster runs the app as one service, and app.roles is set: roles run on plain hosts "
        "only; nothing was changed"
    )


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["rollout", "--hosts", "prod", "--tag", "v1", "--roles", "cron"], "error: --roles: 'cron': no such role of web"),
        (["rollback", "--hosts", "workers", "--roles", "web"], "error: no host selected by --hosts runs web; nothing was changed"),
        (["status", "--hosts", "prod", "--roles", ","], "error: --roles names nothing"),
    ],
)
def test_roles_flag_is_checked_before_anything_is_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], error: str
) -> None:
    from . import entrypoint

    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "app:\n  name: web\n  image: 127.0.0.1:9/acme/web\n"  # nothing answers there: asking it would be exit 4
        "  roles: {web: {hosts: [prod]}, worker: {hosts: [workers], cmd: [w]}}\n"
        "ssh: {config_file: /nonexistent, connect_timeout: 0.01}\n"
        "hosts: {prod: [192.0.2.1], workers: [192.0.2.2]}\n"
    )
    code, out, err = entrypoint.run(monkeypatch, capsys, "-i", str(inventory), *args)
    assert (code, out) == (2, ""), err
    assert err.splitlines()[0] == error


def test_dry_run_lists_each_role_of_each_host() -> None:
    fakes = _fakes()
    plans: dict[str, list[str]] = {}

    def dry(fleet: fleet_module.Fleet) -> Report:
        plans.update(PlainHosts().rollout_plan(fleet, V1, password=None, secrets={}))
        return Report("rollout", "v1")

    _run(fakes, dry)
    assert [line for line in plans["h3"] if line.startswith("#")] == [
        "# role worker",
        "# wait for health: running, without a restart, for 3 s",
    ]
    assert [line for line in plans["h1"] if line.startswith("#")] == [
        "# role web",
        "# wait for health: GET http://<container address>:8080/health answers 2xx within 0.3 s",
        "# role worker",
        "# wait for health: running, without a restart, for 3 s",
    ]
    assert all(not fake.containers for fake in fakes.values()), "a dry run changes nothing"


@pytest.mark.usefixtures("_no_grace")
def test_exec_and_logs_reach_every_role_of_the_run_labelled_by_host_and_role() -> None:
    fakes = _fakes()
    _run(fakes, _rollout(V1))
    found: dict[str, list[tuple[str, str]]] = {}

    def collect(only: frozenset[str] | None) -> Callable[[fleet_module.Fleet], Report]:
        def action(fleet: fleet_module.Fleet) -> Report:
            found[str(only)] = [pair for host in fleet.hosts for pair in operate.serving_containers(fleet, host)]
            return Report("exec", None)

        return action

    _run(fakes, collect(None))
    _run(fakes, collect(frozenset({"worker"})), only=frozenset({"worker"}))
    assert found["None"] == [
        ("h1/web", "web-v1"), ("h1/worker", "web-worker-v1"),
        ("h2/web", "web-v1"), ("h2/worker", "web-worker-v1"),
        ("h3/worker", "web-worker-v1"),
    ]  # fmt: skip
    assert found[str(frozenset({"worker"}))] == [
        ("h1/worker", "web-worker-v1"), ("h2/worker", "web-worker-v1"), ("h3/worker", "web-worker-v1"),
    ]  # fmt: skip
