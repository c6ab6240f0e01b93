"""The benchmark's proxy mode and request load (bench/traffic.py, bench/contenders.py,
bench/report.py): where requests go, how they are counted per verb, what the report says,
and that the proxy inventory is one `deploy` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import contenders, report, traffic
from bench.measure import Plan, Results, Sample
from bench.traffic import LoadResult
from deployer import config
from tests.e2e.load import Sample as Request
from tests.e2e.load import Target
from tests.lab import LabHost
from tests.lab.inventory import default_inventory, merge, render

HOSTS = [LabHost("host1", "172.30.57.11", "deploy-lab-host1"), LabHost("host2", "172.30.57.12", "deploy-lab-host2")]


def test_plain_mode_asks_each_host_on_the_port_the_app_publishes() -> None:
    assert traffic.targets(HOSTS, proxied=False) == [
        Target("172.30.57.11", 8080, path="/version"), Target("172.30.57.12", 8080, path="/version")]


def test_proxy_mode_asks_each_hosts_proxy_for_the_apps_name() -> None:
    found = traffic.targets(HOSTS, proxied=True)
    assert [(t.address, t.port, t.authority, t.path) for t in found] == [
        ("172.30.57.11", 80, "web.lab.test", "/version"), ("172.30.57.12", 80, "web.lab.test", "/version")]


def _request(at: float, ok: bool = True) -> Request:
    target = Target("172.30.57.11", 8080)
    if ok:
        return Request(at, 0.01, target, 200, "bench-1", None)
    return Request(at, 0.01, target, None, "", "ConnectionRefusedError: [Errno 111] Connection refused")


def test_requests_count_in_the_window_they_were_sent_in() -> None:
    requests = [_request(0.5), _request(1.0, ok=False), _request(2.0), _request(3.5, ok=False), _request(9.0)]
    found = traffic.windows(requests, [("rollout", 1.0), ("rollback", 3.0)])
    assert {verb: [r.at for r in items] for verb, items in found.items()} == {
        "rollout": [0.5, 1.0, 2.0], "rollback": [3.5, 9.0]}


def test_results_per_verb_count_failures_and_keep_a_few() -> None:
    requests = [_request(float(i), ok=i % 2 == 0) for i in range(12)]
    rollout, rollback = traffic.results_of(requests, [("rollout", 0.0), ("rollback", 6.0)],
                                           contender="deploy", hosts=2, run=1, rate=20.0,
                                           errors={"rollback": "deploy rollback exited 1"})
    assert (rollout.verb, rollout.total, rollout.failed, rollout.error) == ("rollout", 6, 3, "")
    assert (rollback.verb, rollback.total, rollback.failed, rollback.error) == (
        "rollback", 6, 3, "deploy rollback exited 1")
    assert len(rollout.examples) == traffic.EXAMPLES
    assert "Connection refused" in rollout.examples[0]


def test_the_proxy_inventory_is_one_deploy_accepts(tmp_path: Path) -> None:
    base = default_inventory(registry="172.30.57.2:5000", username="ci", context=str(tmp_path),
                             identity_file=str(tmp_path / "key"), known_hosts=str(tmp_path / "known_hosts"),
                             groups={"lab": ["172.30.57.11"]})
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    text = render(merge(base, {"app": contenders.proxy_overrides("172.30.57.2:5000/deploy/caddy:2")}))
    inventory = config.parse(text, tmp_path / "inventory.yaml")
    assert inventory.app.container.ports == []
    assert inventory.app.proxy is not None
    assert inventory.app.proxy.hosts == [traffic.PROXY_NAME]
    assert inventory.app.proxy.drain_timeout == contenders.PROXY_DRAIN_TIMEOUT
    assert inventory.app.rollout.batch_size == "100%"


def _results() -> Results:
    plan = Plan(hosts=(1, 8), runs=1, contenders=("deploy", "deploy-proxy"))
    results = Results(plan)
    for contender, seconds in (("deploy", 2.0), ("deploy-proxy", 2.3)):
        for hosts in (1, 8):
            for scenario in ("cold", "warm"):
                results.samples.append(Sample(contender, scenario, hosts, 0, seconds * hosts / 2, 0.5, [1] * hosts,
                                              [1000] * hosts))
    results.loads = [
        LoadResult("deploy", "rollout", 8, 0, 480, 37, 20.0, ["... Connection refused"]),
        LoadResult("deploy", "rollback", 8, 0, 320, 25, 20.0),
        LoadResult("deploy-proxy", "rollout", 8, 0, 520, 0, 20.0),
        LoadResult("deploy-proxy", "rollback", 8, 0, 340, 0, 20.0),
    ]
    return results


def test_report_compares_the_proxy_with_plain_deploy_and_counts_failed_requests(tmp_path: Path) -> None:
    results = _results()
    found = {t.name: t for t in report.targets(results)}
    ratio = found["N=8 warm: deploy (proxy) / deploy"]
    assert ratio.measured == pytest.approx(2.3 / 2.0) and ratio.met
    failed = found["failed requests under load, deploy (proxy), rollouts and rollbacks"]
    assert (failed.measured, failed.met, failed.verdict()) == (0, True, "met")
    text = report.render(results)
    assert "| deploy rollout | 8 | 37 of 480 (1 run) | 25 of 320 (1 run) |" in text
    assert "| deploy (proxy) | 8 | 0 of 520 (1 run) | 0 of 340 (1 run) |" in text
    assert "| N=1 cold: deploy (proxy) / deploy | 1.15x | ≤ 1.2x |" in text

    saved = tmp_path / "results.json"
    report.save(results, saved)
    assert report.load(saved).loads == results.loads
    assert report.render(report.load(saved)) == text


def test_failed_requests_behind_the_proxy_miss_the_target() -> None:
    results = _results()
    results.loads[2].failed = 3
    found = {t.name: t for t in report.targets(results)}
    assert found["failed requests under load, deploy (proxy), rollouts and rollbacks"].verdict() == "**missed**"


def test_results_saved_before_the_load_existed_still_load(tmp_path: Path) -> None:
    results = _results()
    results.loads = []
    saved = tmp_path / "old.json"
    report.save(results, saved)
    data = saved.read_text().replace(',\n "loads": []', "")
    assert '"loads"' not in data
    saved.write_text(data)
    assert report.load(saved).loads == []


def test_the_phase_profile_finds_the_history_write_of_either_shape() -> None:
    from bench.phases import split

    state = ("""172.30.57.11  $ sh -c 'docker container ls --all; if [ -f "$2" ]; then cat "$2"; fi' """
             "sh web .deploy/web/history.jsonl")
    append = ("""172.30.57.11  $ sh -c 'umask 007; h="$1/history.jsonl"; { cat || exit 1; } > "$t"; mv -f "$t" "$h"' """
              "sh /var/lib/deploy/apps/web .deploy/web/history.jsonl < (stdin)")
    events = [(1.0, "release abc is REF"), (1.2, state), (1.3, "pulling REF on 1 host(s)"),
              (2.0, "172.30.57.11  pulled"), (3.0, append), (3.5, "172.30.57.11  $ sh -c 'rm lock'")]
    phases = split(events, 4.0, "rollout")
    assert [label for label, _ in phases] == ["start-up, inventory, registry digest", "connect, lock, read state",
                                              "pull and tag", "switch, health checks, history",
                                              "prune, unlock, exit"]
    assert [seconds for _, seconds in phases] == pytest.approx([1.0, 0.3, 0.7, 1.0, 1.0])


def test_the_speed_goals_are_the_loops_pace_and_a_rollback_under_its_warm_rollout() -> None:
    results = Results(Plan(hosts=(1, 8), runs=1, contenders=("deploy", "loop-par")))
    for contender, scenario, hosts, seconds, cpu in (
        ("deploy", "cold", 8, 5.2, 0.70), ("loop-par", "cold", 8, 5.0, 0.6),
        ("deploy", "warm", 8, 3.4, 0.77), ("loop-par", "warm", 8, 3.0, 0.6),
        ("deploy", "warm", 1, 1.2, 0.56), ("loop-par", "warm", 1, 1.0, 0.1),
        ("deploy-rollback", "rollback", 8, 1.8, 0.5),
    ):  # fmt: skip
        results.samples.append(Sample(contender, scenario, hosts, 0, seconds, cpu, [1] * hosts, [0] * hosts))
    found = {t.name: t for t in report.targets(results)}
    assert (found["N=8 cold: deploy / parallel ssh loop"].measured, found["N=8 cold: deploy / parallel ssh loop"].met) == (
        pytest.approx(1.04), True)  # fmt: skip
    assert found["N=8 warm: deploy / parallel ssh loop"].verdict() == "**missed** by 8 %"
    assert found["N=1 warm: deploy / parallel ssh loop"].verdict() == "met (4 % margin)"
    rollback = found["N=8: deploy rollback (registry stopped) / parallel loop's warm rollout"]
    assert (rollback.measured, rollback.met) == (pytest.approx(0.6), True)
    cpu = found["deploy's CPU per added host, warm, 1 to 8 hosts"]
    assert (cpu.measured, cpu.unit, cpu.met) == (pytest.approx(30.0), " ms", False)
    assert found["N=8 warm: deploy / Ansible"].verdict() == "not measured"


def test_the_report_times_deploy_status_next_to_the_warm_rollout() -> None:
    results = Results(Plan(hosts=(1, 8), runs=1, contenders=("deploy",)))
    for scenario, hosts, seconds, cpu in (("warm", 8, 3.9, 0.7), ("status", 8, 0.9, 0.4), ("status", 1, 0.6, 0.35)):
        contender = "deploy-status" if scenario == "status" else "deploy"
        results.samples.append(Sample(contender, scenario, hosts, 0, seconds, cpu, [1] * hosts, [0] * hosts))
    text = report.render(results)
    assert "| 1 | 0.60 | 0.35 | - |" in text, "no warm rollout measured at 1 host: no figure made up"
    assert "| 8 | 0.90 | 0.40 | 3.90 |" in text
