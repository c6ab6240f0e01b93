"""Pure decisions: batches, switch plans, parsing what hosts answer."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import SecretStr

from deployer import commands, plan, switch
from deployer.commands import Login, RemoteCommand
from deployer.config import App, Registry
from deployer.plan import Release
from deployer.state import Container, Entry, HostState, LockRecord, parse_state

from .words import started

APP = App.model_validate({"name": "web", "image": "r/web", "container": {"stop_timeout": 3}})


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [
        (5, 2, [2, 2, 1]),
        (3, 1, [1, 1, 1]),
        (8, "25%", [2, 2, 2, 2]),
        (3, "25%", [1, 1, 1]),
        (4, "100%", [4]),
        (0, 1, []),
    ],
)
def test_batches(count: int, size: int | str, expected: list[int]) -> None:
    assert [len(b) for b in plan.batches(list(range(count)), size)] == expected


def _state(*containers: tuple[str, str], history: tuple[str, ...] = ()) -> HostState:
    return HostState(
        tuple(Container(f"web-{r}", r, f"sha256:{r}", state, str(i)) for i, (r, state) in enumerate(containers)),
        tuple(Entry("t", "rollout", r, f"sha256:{r}", "me", "ok") for r in history),
    )


_words = switch.lines


def test_switch_to_a_new_image_replaces_a_stale_container_of_the_same_release() -> None:
    state = _state(("v1", "running"), ("v2", "created"), history=("v1",))
    step = switch.stop_first(switch.Move(APP, state, "v2", image=plan.Release("r/web", "v2", "sha256:2")))
    assert [a.describe() if isinstance(a, commands.RemoteCommand) else str(a) for a in step.actions()] == [
        "docker container rm",
        "docker create",
        "# wait until web-v2 is healthy",
    ]
    assert _words(step.actions())[2:] == started("web-v2", "docker container stop --time 3 web-v1"), (
        "one round trip stops v1, starts v2 and takes the first look at it"
    )
    replace = step.actions()[2]
    assert isinstance(replace, switch.WaitHealthy) and replace.start is not None and replace.start.waits == 3
    assert step.previous == "v1"
    assert _words(step.undo()) == ["docker container stop --time 3 web-v2", *started("web-v1")]


def test_undo_covers_only_the_steps_reached() -> None:
    state = _state(("v1", "running"), history=("v1",))
    step = switch.stop_first(switch.Move(APP, state, "v2", image=plan.Release("r/web", "v2", "sha256:2")))
    assert _words(step.undo(0)) == [], "a failed docker create leaves v1 running: nothing to undo"
    assert _words(step.undo(1)) == ["docker container stop --time 3 web-v2", *started("web-v1")]


def test_switch_back_to_a_kept_container_creates_nothing() -> None:
    state = _state(("v1", "exited"), ("v2", "running"), history=("v1", "v2"))
    step = switch.stop_first(switch.Move(APP, state, "v1"))
    assert _words(step.actions()) == started("web-v1", "docker container stop --time 3 web-v2")


def test_previous_release_is_what_ran_before() -> None:
    state = _state(("v1", "exited"), ("v2", "exited"), ("v3", "running"), history=("v1", "v2", "v3", "v2"))
    assert state.current == "v3"
    assert _state(("v2", "running"), ("v3", "exited"), history=("v1", "v2", "v3", "v2")).previous() == "v3"
    assert _state(history=()).previous() is None
    assert _state(("v1", "exited"), history=("v1",)).current == "v1", "nothing running: the last switched to"


def test_retained_keeps_the_newest_stopped_releases() -> None:
    state = _state(("v1", "exited"), ("v2", "exited"), ("v3", "exited"), ("v4", "running"), history=("v1", "v2", "v3", "v4"))
    kept, old = state.retained(2)
    assert [c.release for c in kept] == ["v3", "v2"]
    assert [c.release for c in old] == ["v1"]


def test_parse_state_reads_docker_json_lines_and_history() -> None:
    output = (
        '{"Names":"web-v1","State":"running","Labels":"deployer.app=web,deployer.release=v1,deployer.digest=sha256:1",'
        '"CreatedAt":"2026-01-01"}\n'
        "not json\n---\n"
        '{"time":"t","action":"rollout","release":"v1","digest":"sha256:1","by":"me","result":"ok"}\n'
        "garbage\n"
    )
    state = parse_state(output)
    assert state.containers == (Container("web-v1", "v1", "sha256:1", "running", "2026-01-01"),)
    assert [e.release for e in state.history] == ["v1"]


def test_parse_inspect() -> None:
    info = commands.parse_inspect("running|0|2|healthy|172.17.0.2 |2026-11-25T20:00:00.123Z\n")
    assert info == commands.ContainerInfo("running", 0, 2, "healthy", ("172.17.0.2",), "2026-11-25T20:00:00.123Z")
    assert info.crashed, "restarts count as a crash"
    assert commands.health_url(info, 8080, "/health") == "http://172.17.0.2:8080/health"


def test_uptime() -> None:
    now = datetime(2026, 11, 25, 21, 0, 0, tzinfo=timezone.utc)
    assert plan.uptime("2026-11-25T20:58:48.5Z", now) == "1m12s"
    assert plan.uptime("2026-11-23T18:00:00Z", now) == "2d3h"
    assert plan.uptime("", now) == "-"


def test_lock_record_round_trip() -> None:
    record = LockRecord("tok", "alice", "laptop", 42, "2026-11-25T20:00:00+00:00", "rollout v2")
    assert LockRecord.parse(record.to_json().decode()) == record
    assert LockRecord.parse("not a lock") is None


def test_a_host_without_the_image_pulls_it_without_asking_first() -> None:
    release = Release("reg:5000/web", "v2", "sha256:" + "b" * 64)
    login = Login("deploy", "reg:5000", SecretStr("pw"))
    running_v1 = HostState((Container("web-v1", "v1", "sha256:" + "a" * 64, "running", "t"),), ())
    assert plan.pull_steps(release, Registry(server="reg:5000", username="deploy"), SecretStr("pw"), running_v1) == [
        commands.pull(release.reference, "reg:5000/web:v2", login=login, unless_present=False)
    ]


def test_a_host_with_a_container_of_the_image_only_tags_it() -> None:
    digest = "sha256:" + "b" * 64
    release = Release("reg:5000/web", "v2", digest)
    kept_under_another_tag = HostState((Container("web-v1b", "v1b", digest, "exited", "t"),), ())
    assert plan.pull_steps(release, None, None, kept_under_another_tag) == [
        RemoteCommand(("docker", "image", "tag", f"reg:5000/web@{digest}", "reg:5000/web:v2"))
    ]
