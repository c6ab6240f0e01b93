"""Orchestration decisions on scripted hosts: order of work, batches, reverts, locks, rollback."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Callable

import pytest

from deployer import config, proxy
from deployer import fleet as fleet_module
from deployer.errors import CommandError, Interrupted, LockedError, RolloutError, UsageError
from deployer.inventory import Host
from deployer.output import Output
from deployer.plan import Release
from deployer.report import Report
from deployer.state import LOCK_HELD
from deployer.targets.plain import PlainHosts

from .fakehost import FakeHost
from .words import started

V1 = Release("r/web", "v1", "sha256:1")
V2 = Release("r/web", "v2", "sha256:2")


def _inventory(batch_size: int | str = 1, max_failures: int = 0) -> config.Inventory:
    return config.parse(
        "app:\n  name: web\n  image: r/web\n"
        "  healthcheck: {path: /health, port: 8080, timeout: 0.3, interval: 0.01}\n"
        f"  rollout: {{batch_size: {batch_size!r}, max_failures: {max_failures}}}\n"
        "  keep_releases: 1\n"
        "hosts: {prod: [h1, h2, h3]}\n"
    )


def _hosts(names: list[str]) -> list[Host]:
    return [Host(name, name, 22, "root") for name in names]


def _run(
    fakes: dict[str, FakeHost],
    action: Callable[[fleet_module.Fleet], Report],
    inventory: config.Inventory | None = None,
    cancel: threading.Event | None = None,
    break_lock: bool = False,
    out: Output | None = None,
) -> Report:
    with fleet_module.open_fleet(
        inventory or _inventory(),
        _hosts(list(fakes)),
        connect=lambda host: fakes[host.name],
        out=out or Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
        cancel=cancel or threading.Event(),
        lock_for="test",
        break_lock=break_lock,
    ) as fleet:
        return action(fleet)


def _rollout(release: Release) -> Callable[[fleet_module.Fleet], Report]:
    return lambda fleet: PlainHosts().rollout(fleet, release, password=None, secrets={})


def _fleet(healthy: set[str] | None = None) -> dict[str, FakeHost]:
    return {name: FakeHost(name, healthy=set(healthy or {"v1", "v2"})) for name in ("h1", "h2", "h3")}


def test_rollout_switches_every_host_and_records_history() -> None:
    fakes = _fleet()
    report = _run(fakes, _rollout(V1))
    assert [(h.host, h.outcome, h.serving) for h in report.hosts] == [
        ("h1", "switched", "v1"),
        ("h2", "switched", "v1"),
        ("h3", "switched", "v1"),
    ]
    report = _run(fakes, _rollout(V2))
    assert report.ok and {f.serving() for f in fakes.values()} == {"v2"}
    assert all(f.containers["web-v1"].state == "exited" for f in fakes.values()), "previous release kept, stopped"
    assert all(f.lock is None for f in fakes.values()), "lock released"
    assert len(fakes["h1"].history) == 2


def test_same_release_again_changes_nothing() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    report = _run(fakes, _rollout(V1))
    assert [h.outcome for h in report.hosts] == ["unchanged"] * 3


def test_failed_pull_anywhere_replaces_nothing() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    fakes["h2"].fail_pull = True
    with pytest.raises(RolloutError, match="pull failed, so no container was replaced") as caught:
        _run(fakes, _rollout(V2))
    assert {f.serving() for f in fakes.values()} == {"v1"}
    assert not any(c.argv[:2] == ("docker", "create") for f in fakes.values() for c in f.log[-6:])
    assert [h.outcome for h in caught.value.report.hosts] == ["untouched", "failed", "untouched"]


class Recorder:
    """A progress observer that keeps every change, per item."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None, int | None]] = []
        self._lock = threading.Lock()

    def update(self, item, phase, done=None, total=None, *, unit="layers", note=""):  # type: ignore[no-untyped-def]
        with self._lock:
            self.events.append((item, phase, done, total))

    def of(self, item: str) -> list[tuple[str, int | None, int | None]]:
        return [(phase, done, total) for name, phase, done, total in self.events if name == item]


# a pull of two layers, one of which the host has, as `docker pull` prints it without a terminal
PULL_OUTPUT = (
    "r/web@sha256:2: Pulling from r/web\n"
    "17e4b8bfe3a8: Pulling fs layer\n"
    "417b72941ca9: Already exists\n"
    "17e4b8bfe3a8: Download complete\n"
    "17e4b8bfe3a8: Pull complete\n"
    "Digest: sha256:2\n"
)
PULLING = [("pull", None, None), ("pull", 0, 1), ("pull", 1, 2), ("pull", 2, 2), ("pulled", 2, 2)]


def test_each_host_reports_its_pull_as_it_goes_then_its_switch_and_health() -> None:
    fakes = _fleet()
    stderr = io.StringIO()
    _run(fakes, _rollout(V1), out=Output(stdout=io.StringIO(), stderr=stderr))
    assert [line for line in stderr.getvalue().splitlines() if "pulled" in line] == [
        "h1  pulled", "h2  pulled", "h3  pulled",
    ], "off a terminal, the same plain lines as ever"  # fmt: skip
    for fake in fakes.values():
        fake.pull_output = PULL_OUTPUT
    fakes["h2"].healthy = {"v1"}  # v2 fails its health check on h2
    recorder = Recorder()
    out = Output(stdout=io.StringIO(), stderr=io.StringIO())
    out.watch = recorder
    with pytest.raises(RolloutError):
        _run(fakes, _rollout(V2), out=out)
    switch = [("switch", None, None)] * 2 + [("health", None, None)]  # create, then stop v1 and start v2 at once
    assert recorder.of("h1") == [*PULLING, *switch, ("healthy", None, None), ("revert", None, None),
                                 ("reverted", None, None)]  # fmt: skip
    assert recorder.of("h2") == [*PULLING, *switch, ("revert", None, None), ("failed", None, None)]
    assert recorder.of("h3") == [*PULLING, ("untouched", None, None)]


def test_unhealthy_release_puts_every_switched_host_back() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    fakes["h2"].healthy = {"v1"}  # v2 fails its health check on h2 only
    with pytest.raises(RolloutError, match="failed on 1 host") as caught:
        _run(fakes, _rollout(V2))
    assert {name: f.serving() for name, f in fakes.items()} == {"h1": "v1", "h2": "v1", "h3": "v1"}
    outcomes = [(h.host, h.outcome, h.serving) for h in caught.value.report.hosts]
    assert outcomes == [("h1", "reverted", "v1"), ("h2", "failed", "v1"), ("h3", "untouched", "v1")]
    assert "GET http://10.0.0.9:8080/health answered 503" in caught.value.report.hosts[1].detail
    assert "boom" in caught.value.report.hosts[1].detail, "container logs explain the failure"


def test_max_failures_tolerates_a_failed_host() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    fakes["h2"].healthy = {"v1"}
    report = _run(fakes, _rollout(V2), _inventory(max_failures=1))
    assert {name: f.serving() for name, f in fakes.items()} == {"h1": "v2", "h2": "v1", "h3": "v2"}
    assert [h.outcome for h in report.hosts] == ["switched", "failed", "switched"]


def test_percentage_batches() -> None:
    fakes = _fleet()
    report = _run(fakes, _rollout(V1), _inventory(batch_size="100%"))
    assert report.ok


def test_second_run_is_refused_while_the_lock_is_held() -> None:
    fakes = _fleet()
    fakes["h3"].lock = b'{"token": "x", "by": "alice", "machine": "elsewhere", "pid": 1, "since": "t", "command": "rollout v9"}\n'
    with pytest.raises(LockedError, match="h3: web is locked by alice@elsewhere") as caught:
        _run(fakes, _rollout(V1))
    assert "nothing was changed" in caught.value.message
    assert all(f.serving() is None for f in fakes.values())
    assert fakes["h1"].lock is None and fakes["h2"].lock is None, "locks taken on other hosts were released"
    assert fakes["h3"].lock is not None, "someone else's lock is left alone"
    report = _run(fakes, _rollout(V1), break_lock=True)
    assert report.ok and fakes["h3"].lock is None


def _lock_of(token: str, started: float) -> bytes:
    return json.dumps(
        {"token": token, "by": "bob", "machine": "elsewhere", "pid": 1, "since": "t", "command": "rollout", "started": started}
    ).encode()


def _open(
    fakes: dict[str, FakeHost], *, lock_for: str | None = "test", partial: bool = False
) -> contextlib.AbstractContextManager[fleet_module.Fleet]:
    return fleet_module.open_fleet(
        _inventory(),
        _hosts(list(fakes)),
        connect=lambda host: fakes[host.name],
        out=Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
        cancel=threading.Event(),
        lock_for=lock_for,
        partial=partial,
    )


def test_a_run_that_started_later_gives_way_at_once() -> None:
    fakes = _fleet()
    fakes["h2"].lock = _lock_of("other", started=1.0)  # an earlier run holds one host
    with pytest.raises(LockedError, match="h2: web is locked by bob@elsewhere"), _open(fakes):
        pytest.fail("a run must not go on without every lock")
    assert fakes["h1"].lock is None and fakes["h3"].lock is None, "the hosts it locked are let go"
    assert fakes["h2"].lock == _lock_of("other", started=1.0)


def test_a_run_that_started_first_takes_the_hosts_a_later_run_lets_go() -> None:
    fakes = _fleet()
    fakes["h2"].lock = _lock_of("later", started=time.time() + 3600)
    answered = fakes["h2"].run

    def let_go_after_answering(command, timeout=None):  # type: ignore[no-untyped-def]
        result = answered(command, timeout)
        if result.status == LOCK_HELD:
            fakes["h2"].lock = None  # the later run saw this one's locks and stopped
        return result

    fakes["h2"].run = let_go_after_answering  # type: ignore[method-assign]
    with _open(fakes) as fleet:
        assert set(fleet.states) == set(fleet.hosts), "every host locked and its state read"
        assert all(f.lock is not None and b"later" not in f.lock for f in fakes.values())
    assert all(f.lock is None for f in fakes.values())


def test_a_run_that_started_first_gives_up_when_the_holder_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_module, "CONTENDED_WAIT", 0.2)
    fakes = _fleet()
    fakes["h2"].lock = _lock_of("later", started=time.time() + 3600)
    with pytest.raises(LockedError, match="h2: web is locked by bob"), _open(fakes):
        pytest.fail("a run must not go on without every lock")
    assert fakes["h1"].lock is None and fakes["h3"].lock is None


def _race(fakes: dict[str, FakeHost]) -> list[str]:
    """Start two runs at the same instant; what each one did."""
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def one_run() -> None:
        start.wait()
        try:
            with _open(fakes):
                outcomes.append("went on")
                time.sleep(0.05)
        except LockedError:
            outcomes.append("locked out")

    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    return outcomes


def test_of_two_runs_started_together_exactly_one_goes_on() -> None:
    for _ in range(20):
        fakes = _fleet()
        assert sorted(_race(fakes)) == ["locked out", "went on"]
        assert all(f.lock is None for f in fakes.values())


def test_host_lost_mid_rollout_puts_the_others_back() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    fakes["h3"].unreachable_after = len(fakes["h3"].log) + 5  # open, state, pull and tag pass; the switch fails
    with pytest.raises(RolloutError) as caught:
        _run(fakes, _rollout(V2))
    assert fakes["h1"].serving() == "v1" and fakes["h2"].serving() == "v1"
    assert [h.outcome for h in caught.value.report.hosts] == ["reverted", "reverted", "unreachable"]


def test_interrupt_between_batches_puts_hosts_back() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    cancel = threading.Event()
    original = fakes["h1"].run

    def run_then_cancel(command, timeout=None, on_line=None):  # type: ignore[no-untyped-def]
        result = original(command, timeout, on_line=on_line)
        if "docker container start" in str(command):
            cancel.set()
        return result

    fakes["h1"].run = run_then_cancel  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        _run(fakes, _rollout(V2), cancel=cancel)
    assert {f.serving() for f in fakes.values()} == {"v1"}
    assert all(f.lock is None for f in fakes.values())


def test_rollback_goes_to_what_ran_before_without_the_registry() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    _run(fakes, _rollout(V2))
    report = _run(fakes, lambda fleet: PlainHosts().rollback(fleet, None))
    assert report.ok and report.release == "v1"
    assert {f.serving() for f in fakes.values()} == {"v1"}
    assert not any("pull" in str(c) for f in fakes.values() for c in f.log[-8:])
    report = _run(fakes, lambda fleet: PlainHosts().rollback(fleet, None))
    assert {f.serving() for f in fakes.values()} == {"v2"}, "rolling back again returns to what ran before"


def test_rollback_with_nothing_to_go_back_to_changes_nothing() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    with pytest.raises(UsageError, match="h1: no previous release recorded"):
        _run(fakes, lambda fleet: PlainHosts().rollback(fleet, None))
    with pytest.raises(UsageError, match="release v7 is no longer on this host"):
        _run(fakes, lambda fleet: PlainHosts().rollback(fleet, "v7"))
    assert {f.serving() for f in fakes.values()} == {"v1"}


def test_old_releases_are_pruned_beyond_keep_releases() -> None:
    fakes = _fleet()
    for tag in ("v1", "v2", "v3"):
        for fake in fakes.values():
            fake.healthy.add(tag)
        _run(fakes, _rollout(Release("r/web", tag, f"sha256:{tag}")))
    assert sorted(fakes["h1"].containers) == ["web-v2", "web-v3"], "keep_releases: 1 previous kept"


def test_a_history_line_that_cannot_be_written_fails_the_switch_and_puts_the_fleet_back() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    fakes["h2"].history_full = True
    with pytest.raises(RolloutError, match="failed on 1 host") as caught:
        _run(fakes, _rollout(V2))
    assert {name: f.serving() for name, f in fakes.items()} == {"h1": "v1", "h2": "v1", "h3": "v1"}
    h2 = caught.value.report.hosts[1]
    assert (h2.outcome, h2.serving) == ("failed", "v1")
    assert "history not written" in h2.detail and "No space left on device" in h2.detail
    lines = [json.loads(line) for line in fakes["h1"].history]
    assert [(e["release"], e["result"]) for e in lines] == [("v1", "ok"), ("v2", "ok"), ("v2", "reverted")]


def test_a_container_that_cannot_be_created_leaves_the_old_release_serving() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    fakes["h1"].fail_create = True
    with pytest.raises(RolloutError) as caught:
        _run(fakes, _rollout(V2))
    h1 = caught.value.report.hosts[0]
    assert (h1.outcome, h1.serving) == ("failed", "v1")
    assert fakes["h1"].serving() == "v1"


def test_an_unexpected_error_inside_a_switch_still_puts_the_host_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer import health

    fakes = _fleet()
    _run(fakes, _rollout(V1))

    def broken(*args: object, **kwargs: object) -> None:
        if kwargs.get("interruptible", True):
            raise OverflowError("timestamp too large")

    monkeypatch.setattr(health, "wait", broken)
    with pytest.raises(RolloutError) as caught:
        _run(fakes, _rollout(V2))
    assert {f.serving() for f in fakes.values()} == {"v1"}
    assert "unexpected OverflowError" in caught.value.report.hosts[0].detail


def test_one_machine_listed_twice_is_refused_before_anything_changes() -> None:
    machine = FakeHost("h1", healthy={"v1"})
    hosts = [Host("h1", "10.0.0.1", 22, "root"), Host("h1-again", "localhost", 22, "root")]
    with (
        pytest.raises(UsageError, match="the inventory lists one machine twice"),
        fleet_module.open_fleet(
            _inventory(),
            hosts,
            connect=lambda host: machine,
            out=Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
            cancel=threading.Event(),
            lock_for="test",
        ),
    ):
        pass
    assert machine.lock is None, "the lock taken through the first name is released"


def test_a_status_run_goes_on_without_the_hosts_it_cannot_reach() -> None:
    fakes = _fleet()
    fakes["h2"].unreachable_after = 0
    with fleet_module.open_fleet(
        _inventory(),
        _hosts(list(fakes)),
        connect=lambda host: fakes[host.name] if host.name != "h2" else _refuse(host),
        out=Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
        cancel=threading.Event(),
        partial=True,
    ) as fleet:
        from deployer import targets

        rows = targets.status(fleet).rows
    assert [(row.host, row.state) for row in rows] == [("h2", "unreachable"), ("h1", "no container"), ("h3", "no container")]


def test_a_status_run_shows_a_row_for_a_host_whose_engine_does_not_answer() -> None:
    fakes = _fleet()
    fakes["h3"].engine_down = True
    with _open(fakes, lock_for=None, partial=True) as fleet:
        from deployer import targets

        rows = targets.status(fleet).rows
    assert [(row.host, row.state, row.error) for row in rows] == [
        ("h3", "error", "h3: read containers and history failed: Cannot connect to the Docker daemon"),
        ("h1", "no container", None),
        ("h2", "no container", None),
    ]
    with pytest.raises(CommandError), _open(fakes, lock_for=None):
        pass  # a run that is not read-only stops before anything changes


def _refuse(host: Host) -> FakeHost:
    from deployer.errors import ConnectError

    raise ConnectError(f"{host}: cannot connect to {host.hostname}:22: timed out")


def test_a_dry_run_behind_the_proxy_shows_the_start_first_order() -> None:
    fakes = _fleet()
    _run(fakes, _rollout(V1))
    inventory = config.parse(
        "app:\n  name: web\n  image: r/web\n  proxy: {hosts: [web.example.com], app_port: 8080}\n"
        "hosts: {prod: [h1, h2, h3]}\n"
    )
    plans: dict[str, list[str]] = {}

    def plan(fleet: fleet_module.Fleet) -> Report:
        plans.update(PlainHosts().rollout_plan(fleet, V2, password=None, secrets={}))
        return Report("plan", None)

    _run(fakes, plan, inventory)
    lines = plans["h1"]
    assert "docker run --detach --name deploy-proxy" in lines[0], "the proxy is started where missing"
    assert 'dk pull "$1"' in lines[1]
    assert lines[2].startswith("docker create --name web-v2 ") and "--network deploy-proxy" in lines[2]
    assert lines[3:] == [
        started("web-v2", str(proxy.connect("web-v1")))[0],
        "# wait for health: Docker HEALTHCHECK healthy, or running for 3 s, within 30 s",
        "# route the app's traffic to web-v2",
        "# wait until no request is in flight to web-v1, then stop it",
    ]
    assert {f.serving() for f in fakes.values()} == {"v1"}, "a dry run changes nothing"
