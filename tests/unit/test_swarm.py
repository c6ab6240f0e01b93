"""Swarm decisions: what the manager reports, what changes, and the order of work on a scripted manager."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployer import config, inventory, targets
from deployer import fleet as fleet_module
from deployer.errors import Interrupted, RolloutError, UsageError
from deployer.output import Output
from deployer.plan import Release
from deployer.report import Report
from deployer.state import Entry
from deployer.targets import swarm
from deployer.targets import swarm_service as commands
from deployer.targets.swarm import SwarmCluster

from .fakeswarm import FakeManager

V1 = Release("r/web", "v1", "sha256:1")
V2 = Release("r/web", "v2", "sha256:2")
SECRET = {"DATABASE_URL": SecretStr("pg://s3cret")}

# What the lab's manager printed for a service of three replicas (shortened).
RECORDED = """\
{"Availability":"Active","Hostname":"host1","ManagerStatus":"Leader","Status":"Ready"}
{"Availability":"Active","Hostname":"host2","ManagerStatus":"","Status":"Ready"}
{"Availability":"Drain","Hostname":"host3","ManagerStatus":"","Status":"Ready"}
---
{"ID":"x78","Spec":{"Name":"web","Labels":{"deployer.app":"web","deployer.digest":"sha256:2bb1","deployer.release":"8c4b578d34d8"},\
"TaskTemplate":{"ContainerSpec":{"Image":"172.30.57.2:5000/acme/web@sha256:2bb1","Init":true,\
"Mounts":[{"Type":"volume","Source":"web-data","Target":"/data"}],"Secrets":[{"File":{"Name":"DATABASE_URL","UID":"0",\
"GID":"0","Mode":292},"SecretID":"otn","SecretName":"web-DATABASE_URL-2b12fe38"}]}},"Mode":{"Replicated":{"Replicas":3}},\
"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":8080,"PublishedPort":8080,"PublishMode":"host"}]}},\
"UpdateStatus":{"State":"completed","Message":"update completed"}}
---
{"CurrentState":"Running 6 seconds ago","DesiredState":"Running","Error":"","Image":"172.30.57.2:5000/acme/web@sha256:2bb1","Name":"web.1","Node":"host3"}
{"CurrentState":"Failed 19 seconds ago","DesiredState":"Shutdown","Error":"\\"task: non-zero exit (143): dockerexec: unhealthy container\\"","Image":"172.30.57.2:5000/acme/web@sha256:13c7","Name":"web.2","Node":"host2"}
{"CurrentState":"Starting 1 second ago","DesiredState":"Running","Error":"","Image":"172.30.57.2:5000/acme/web@sha256:2bb1","Name":"web.2","Node":"host2"}
"""


def _inventory(**swarm_settings: object) -> config.Inventory:
    settings = {"manager": "mgr1", "replicas": 3, "timeout": 5, **swarm_settings}
    return config.parse(
        "app:\n  name: web\n  image: r/web\n"
        "  container: {ports: ['8080:8080'], env: {LOG_LEVEL: info}, secrets: [DATABASE_URL], volumes: ['d:/data']}\n"
        f"hosts:\n  cluster: {{swarm: {settings!r}}}\n  prod: [h1]\n".replace("'", '"'),
        Path("inv.yaml"),
    )


def _run(
    manager: FakeManager,
    action: Callable[[fleet_module.Fleet], Report],
    inventory: config.Inventory | None = None,
    cancel: threading.Event | None = None,
) -> Report:
    inv = inventory or _inventory()
    with fleet_module.open_fleet(
        inv,
        [_cluster(inv)],
        connect=lambda host: manager,
        out=Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
        cancel=cancel or threading.Event(),
        lock_for="test",
    ) as fleet:
        return action(fleet)


def _cluster(inv: config.Inventory) -> inventory.Host:
    return next(host for host in _select(inv, "cluster") if host.swarm is not None)


def _select(inv: config.Inventory, spec: str) -> list[inventory.Host]:
    return inventory.select(inv, spec, inventory.no_ssh_config)


def _rollout(release: Release, secrets: dict[str, SecretStr] = SECRET) -> Callable[[fleet_module.Fleet], Report]:
    return lambda fleet: SwarmCluster().rollout(fleet, release, password=SecretStr("pw"), secrets=secrets)


def _manager() -> FakeManager:
    return FakeManager("mgr1", healthy_digests={"sha256:1", "sha256:2"})


def _outcomes(report: Report) -> list[tuple[str, str, str | None]]:
    return [(h.host, h.outcome, h.serving) for h in report.hosts]


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swarm, "POLL", 0.0)


# ---------------------------------------------------------------- what the manager reports


def test_recorded_output_parses() -> None:
    state = commands.parse_cluster(RECORDED)
    assert state.nodes == ("host1", "host2"), "a drained node takes no tasks"
    service = state.service
    assert service is not None
    assert (service.release, service.digest, service.replicas) == ("8c4b578d34d8", "sha256:2bb1", 3)
    assert service.ports == {"mode=host,target=8080,published=8080,protocol=tcp"}
    assert service.mounts == {"/data": "type=volume,source=web-data,target=/data"}
    assert service.secrets == {"DATABASE_URL": "web-DATABASE_URL-2b12fe38"}
    assert (service.update, service.env) == ("completed", {})
    assert [(t.node, t.state, t.since) for t in state.current] == [("host2", "starting", "1 second"), ("host3", "running", "6 seconds")]
    assert state.tasks[1].error == "task: non-zero exit (143): dockerexec: unhealthy container"
    assert not swarm.converged(state, "sha256:2bb1")
    assert swarm.waiting_for(state, "sha256:2bb1") == "1 of 3 task(s) running sha256:2bb1; host2: starting"


def test_no_service_yet() -> None:
    state = commands.parse_cluster('{"Hostname":"host1","Status":"Ready","Availability":"Active"}\n---\n')
    assert state.service is None and state.tasks == () and state.expected == 1


# ---------------------------------------------------------------- decisions


def test_changes_remove_and_add_only_what_differs() -> None:
    app = _inventory().app
    service = commands.Service(
        release="v1", digest="sha256:1", replicas=3,
        env={"LOG_LEVEL": "debug", "OLD": "1"},
        ports=frozenset({"mode=host,target=8080,published=8080,protocol=tcp", "mode=host,target=9090,published=9090,protocol=tcp"}),
        mounts={"/data": "type=volume,source=d,target=/data", "/old": "type=volume,source=o,target=/old"},
        secrets={"DATABASE_URL": "web-DATABASE_URL-11111111"}, update="completed", message="",
    )  # fmt: skip
    assert swarm.changes(app, service, {"DATABASE_URL": "web-DATABASE_URL-22222222"}) == commands.ServiceChanges(
        env_rm=("OLD",), env_add=("LOG_LEVEL=info",),
        publish_rm=("mode=host,target=9090,published=9090,protocol=tcp",),
        mount_rm=("/old",), secret_rm=("web-DATABASE_URL-11111111",),
        secret_add=("source=web-DATABASE_URL-22222222,target=DATABASE_URL",),
    )  # fmt: skip


def test_secret_names_round_trip_to_their_targets() -> None:
    app = _inventory().app
    names = commands.secret_names(app, SECRET, "k" * 64)
    assert commands.secret_targets(app, list(names.values())) == names


@pytest.mark.parametrize(
    ("ports", "replicas", "service", "message"),
    [
        (["127.0.0.1:80:8080"], 3, "", "127.0.0.1:80:8080: a Swarm service publishes a port on every address"),
        (["8080:8080"], 4, "", "4 replicas publish ports, but only 3 node(s) are ready"),
        (["8080:8080"], "global", "replicated", "the service web is replicated and Swarm cannot change a service's mode"),
    ],
)
def test_what_swarm_cannot_do_is_refused_before_anything_changes(
    ports: list[str], replicas: int | str, service: str, message: str
) -> None:
    app = config.App.model_validate({"name": "web", "image": "r/web", "container": {"ports": ports}})
    settings = config.Swarm.model_validate({"manager": "m", "replicas": replicas})
    running = commands.parse_cluster(RECORDED).service if service else None
    state = commands.ClusterState(("host1", "host2", "host3"), running, ())
    with pytest.raises(UsageError, match="nothing was changed") as caught:
        swarm.check(app, settings, state)
    assert message in caught.value.message


def test_selection_gives_the_cluster_its_manager_and_refuses_mixing() -> None:
    inv = _inventory()
    hosts = _select(inv, "all")
    assert [(h.name, h.hostname, h.swarm is not None) for h in hosts] == [("h1", "h1", False), ("cluster", "mgr1", True)]
    with pytest.raises(UsageError, match=r"plain hosts \(h1\) and Swarm clusters \(cluster\)"):
        inventory.one_kind(hosts)
    inventory.one_kind(_select(inv, "cluster"))
    inventory.one_kind(_select(inv, "prod"))


# ---------------------------------------------------------------- order of work on a scripted manager


def test_first_rollout_creates_the_service_with_its_secrets_on_stdin_only() -> None:
    manager = _manager()
    report = _run(manager, _rollout(V1))
    assert _outcomes(report) == [(f"cluster/host{i}", "switched", "v1") for i in (1, 2, 3)]
    verbs = [c.purpose or c.describe() for c in manager.log if c.purpose != "read the Swarm service"]
    assert verbs == [
        "take the lock and read containers and history", "read the Swarm secret key", "create a Swarm secret",
        "docker service create", "record history", "list the Swarm secrets", "read containers and history",
        "release the deploy lock",
    ]  # fmt: skip
    assert all("s3cret" not in c.render() for c in manager.log)
    assert list(manager.secrets.values()) == [b"pg://s3cret"]
    assert manager.serving() == "v1" and manager.lock is None
    assert '"secrets": ["web-DATABASE_URL-' in manager.history[-1]


def test_next_rollout_updates_only_what_changed_and_the_same_again_changes_nothing() -> None:
    manager = _manager()
    _run(manager, _rollout(V1))
    report = _run(manager, _rollout(V2))
    assert report.ok and manager.serving() == "v2"
    update = next(c for c in reversed(manager.log) if c.purpose == "docker service update")
    assert "--env-add" not in update.argv and "--secret-add" not in update.argv, "nothing else changed"
    assert "--publish-add" not in update.argv and "--mount-add" not in update.argv
    before = len(manager.log)
    report = _run(manager, _rollout(V2))
    assert [h.outcome for h in report.hosts] == ["unchanged"] * 3
    assert not any("service" in c.argv for c in manager.log[before:])


def test_unhealthy_update_is_rolled_back_by_swarm_and_fails_the_run() -> None:
    manager = _manager()
    _run(manager, _rollout(V1))
    v3 = Release("r/web", "v3", "sha256:3")
    with pytest.raises(RolloutError, match="rollout of v3 failed on cluster: Swarm rolled the update back") as caught:
        _run(manager, _rollout(v3))
    assert caught.value.exit_code == 7 and "the service is back on v1" in caught.value.message
    assert _outcomes(caught.value.report) == [(f"cluster/host{i}", "reverted", "v1") for i in (1, 2, 3)]
    assert "unhealthy container" in caught.value.report.hosts[0].detail
    assert manager.serving() == "v1"
    assert not any(c.argv[:3] == ("docker", "service", "rollback") for c in manager.log), "Swarm went back itself"
    assert '"result": "failed"' in manager.history[-1]


def test_first_release_that_never_gets_healthy_is_removed() -> None:
    manager = FakeManager("mgr1")
    with pytest.raises(RolloutError, match="a task on host1 failed") as caught:
        _run(manager, _rollout(V1))
    assert "the service was removed" in caught.value.message
    assert manager.service is None
    assert [h.outcome for h in caught.value.report.hosts] == ["failed"] * 3


def test_update_that_does_not_converge_in_time_is_rolled_back_by_deploy() -> None:
    manager = _manager()
    _run(manager, _rollout(V1))
    manager.stuck = True
    with pytest.raises(RolloutError, match=r"not converged within 0\.01 s"):
        _run(manager, _rollout(V2), _inventory(timeout=0.01))
    assert any(c.render() == "docker service rollback --detach web" for c in manager.log)
    assert manager.serving() == "v1"


def test_interrupt_while_converging_puts_the_service_back() -> None:
    manager = _manager()
    _run(manager, _rollout(V1))
    manager.stuck = True
    cancel = threading.Event()
    original = manager.run

    def run_then_cancel(command, timeout=None):  # type: ignore[no-untyped-def]
        result = original(command, timeout)
        if command.purpose == "docker service update":
            cancel.set()
        return result

    manager.run = run_then_cancel  # type: ignore[method-assign]
    with pytest.raises(Interrupted, match="the service is back on v1"):
        _run(manager, _rollout(V2), cancel=cancel)
    assert manager.serving() == "v1" and manager.lock is None


def test_rollback_goes_to_the_previous_digest_and_its_secrets_without_the_registry() -> None:
    manager = _manager()
    _run(manager, _rollout(V1))
    _run(manager, _rollout(V2, {"DATABASE_URL": SecretStr("pg://rotated")}))
    first, second = manager.secrets
    assert manager.service is not None and manager.service.secrets == {"DATABASE_URL": second}
    before = len(manager.log)
    report = _run(manager, lambda fleet: SwarmCluster().rollback(fleet, None))
    assert report.ok and report.release == "v1" and manager.serving() == "v1"
    assert manager.service.secrets == {"DATABASE_URL": first}, "the secrets v1 ran with"
    revert = next(c for c in manager.log[before:] if c.purpose == "docker service update")
    assert revert.argv[:2] == ("docker", "service") and revert.stdin == b"", "no registry login"
    assert "--with-registry-auth" not in revert.argv and "r/web@sha256:1" in revert.argv


def test_rollback_with_nothing_to_go_back_to_changes_nothing() -> None:
    manager = _manager()
    with pytest.raises(UsageError, match="cluster: no service web"):
        _run(manager, lambda fleet: SwarmCluster().rollback(fleet, None))
    _run(manager, _rollout(V1))
    with pytest.raises(UsageError, match="cluster: no previous release recorded"):
        _run(manager, lambda fleet: SwarmCluster().rollback(fleet, None))
    with pytest.raises(UsageError, match="release v7 was never rolled out here"):
        _run(manager, lambda fleet: SwarmCluster().rollback(fleet, "v7"))


def test_status_has_a_row_per_task_and_counts_an_update_under_way_as_drift() -> None:
    manager = _manager()
    _run(manager, _rollout(V1))
    results = []

    def status(fleet: fleet_module.Fleet) -> Report:
        results.append(targets.status(fleet).to_dict())
        return Report("status", None)

    _run(manager, status)
    manager.update = "updating"
    _run(manager, status)
    rows = [(r["host"], r["release"], r["digest"], r["state"]) for r in results[0]["hosts"]]
    assert rows == [(f"cluster/host{i}", "v1", "sha256:1", "running") for i in (1, 2, 3)]
    assert [result["drift"] for result in results] == [False, True]


def test_a_release_left_unrecorded_by_a_lost_connection_is_recorded_by_the_next_run() -> None:
    manager = _manager()
    _run(manager, _rollout(V1))
    _run(manager, _rollout(V2))
    manager.history.pop()  # the connection to the manager dropped before the line was written
    report = _run(manager, _rollout(V2))
    assert _outcomes(report) == [(f"cluster/host{i}", "unchanged", "v2") for i in (1, 2, 3)]
    late = json.loads(manager.history[-1])
    assert (late["release"], late["result"], late["previous"]) == ("v2", "ok", "v1")
    assert len(manager.history) == 2, "recorded once, not again by the unchanged run"


def test_secret_versions_no_kept_release_uses_are_pruned() -> None:
    app = _inventory().app.model_copy(update={"keep_releases": 1})
    history = tuple(
        Entry("t", "rollout", release, f"sha256:{release}", "me", result, None, [f"web-DATABASE_URL-{release}"])
        for release, result in (("v1", "ok"), ("v2", "ok"), ("v3", "failed"), ("v4", "ok"))
    )
    service = commands.parse_cluster(RECORDED).service
    existing = ["web-DATABASE_URL-2b12fe38", "web-DATABASE_URL-v1", "web-DATABASE_URL-v2", "web-DATABASE_URL-v3", "web-DATABASE_URL-v4"]
    assert swarm.unused_secrets(app, history, service, existing) == ["web-DATABASE_URL-v1", "web-DATABASE_URL-v3"]
