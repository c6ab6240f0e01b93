"""The benchmark harness (bench/) end to end, at its smallest: one host, one run, `deploy`
with and without the proxy and the parallel ssh loop, so a change that breaks the harness
shows in the normal test run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.measure import Plan, Results, run_session, startup_times
from tests.lab import Lab

pytestmark = pytest.mark.e2e


def test_bench_smoke(clean_lab: Lab, tmp_path: Path) -> None:
    plan = Plan.smoke()
    results = Results(plan)
    run_session(clean_lab, plan, results, 0, workdir=tmp_path, log=lambda message: None)
    results.startup = startup_times(plan.help_runs)

    failed = [f"{s.contender} {s.scenario}: {s.error}" for s in results.samples if s.error]
    assert not failed, failed
    measured = {(s.contender, s.scenario) for s in results.samples}
    assert measured == {("deploy", "cold"), ("deploy", "warm"), ("deploy-status", "status"),
                        ("deploy-rollback", "rollback"), ("deploy-proxy", "cold"), ("deploy-proxy", "warm"),
                        ("deploy-proxy-rollback", "rollback"), ("loop-par", "cold"), ("loop-par", "warm")}
    assert all(s.seconds > 0 and s.hosts == 1 for s in results.samples)
    deploy_warm = next(s for s in results.samples if (s.contender, s.scenario) == ("deploy", "warm"))
    assert deploy_warm.cpu_seconds > 0
    assert deploy_warm.registry_bytes[0] > 0, "the warm pull fetched the changed layer"
    assert deploy_warm.ssh_connections[0] >= 1

    loads = {(r.contender, r.verb): r for r in results.loads}
    assert set(loads) == {(mode, verb) for mode in ("deploy", "deploy-proxy") for verb in ("rollout", "rollback")}
    assert all(r.total > 0 and not r.error for r in loads.values()), results.loads
    assert loads["deploy-proxy", "rollout"].failed == 0, loads["deploy-proxy", "rollout"]
    assert loads["deploy-proxy", "rollback"].failed == 0, loads["deploy-proxy", "rollback"]

    first, second = results.images
    assert first.total_bytes > 40e6
    assert len(second.new_layers(first)) == 1, "only the top layer changes between releases"

    text = report.render(results)
    for row in ("| 1 | cold | ", "| 1 | warm | ", "deploy rollout", "parallel ssh loop", "deploy (proxy)",
                "### Targets", "N=1 warm: deploy / parallel ssh loop", "`deploy --help` wall time",
                "N=1 warm: deploy (proxy) / deploy", "### Failed requests under load", "### deploy status"):
        assert row in text, f"{row!r} missing from the report:\n{text}"

    saved = tmp_path / "results.json"
    report.save(results, saved)
    assert report.render(report.load(saved)) == text
