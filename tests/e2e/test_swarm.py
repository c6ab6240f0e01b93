"""`deploy` on a Docker Swarm made of the lab's hosts: the service, Swarm's rolling update and
its rollback, `deploy rollback`, secrets as Swarm secrets, and status per node."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest

from tests.lab import Lab

from .support import deploy, ok, release, serving

pytestmark = pytest.mark.e2e

#: fast enough for a test: one task at a time, each watched for 1 s
SWARM = {"replicas": 3, "update": {"parallelism": 1, "monitor": 1}, "timeout": 60}


def test_rollout_update_failed_update_rollback_secret_and_status(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    lab.swarm()
    manager = lab.hosts[0]
    groups = {"cluster": {"swarm": {"manager": manager.address, **SWARM}}, "lab": [h.address for h in lab.hosts]}
    inventory = str(lab.write_inventory(tmp_path / "inventory.yaml", hosts=groups,
                                        app_overrides={"container": {"secrets": ["DATABASE_URL"]}}))
    sentinel = "s3ntinel-" + str(time.time_ns())
    run = functools.partial(deploy, lab, "-i", inventory, env={"DATABASE_URL": sentinel})

    v1 = release(lab, "-i", inventory)
    mixed = run("rollout", "--hosts", "all")
    assert mixed.code == 2 and "plain hosts" in mixed.stderr and "Swarm clusters (cluster)" in mixed.stderr
    first = ok(run("rollout", "--hosts", "cluster"))
    assert serving(lab) == ["v1"] * 3
    assert first.stdout.count("switched") == 3

    lab.commit_app("v2")
    v2 = release(lab, "-i", inventory)
    ok(run("rollout", "--hosts", "cluster"))
    assert serving(lab) == ["v2"] * 3, "every node's task answers on its host's address"
    assert [lab.http_get(h, "/cgi-bin/secret?DATABASE_URL")[1] for h in lab.hosts] == [sentinel] * 3
    assert [lab.http_get(h, "/cgi-bin/env?DATABASE_URL")[1].strip() for h in lab.hosts] == [""] * 3
    spec = lab.host_exec(manager, ["docker", "service", "inspect", "web"]).stdout
    assert sentinel not in spec and lab.registry_password not in spec
    leftovers = lab.host_exec(manager, ["grep", "-rlF", lab.registry_password, "/tmp", "/root"], check=False)
    assert leftovers.stdout == "", "the registry login outlived the command"

    lab.commit_app("v3", mode="unhealthy")
    v3 = release(lab, "-i", inventory)
    failed = run("rollout", "--hosts", "cluster")
    assert failed.code == 7, failed.output
    assert f"rollout of {v3} failed on cluster: Swarm rolled the update back" in failed.stderr, failed.output
    assert f"the service is back on {v2}" in failed.stderr and "unhealthy container" in failed.stdout, failed.output
    assert serving(lab) == ["v2"] * 3

    status = json.loads(ok(run("status", "--hosts", "cluster", "--json")).stdout)
    assert sorted((row["host"], row["release"], row["state"]) for row in status["hosts"]) == [
        (f"cluster/{host.name}", v2, "running") for host in lab.hosts
    ]
    assert status["drift"] is False

    back = ok(run("rollback", "--hosts", "cluster", "--json"))
    assert json.loads(back.stdout)["release"] == v1
    assert serving(lab) == ["v1"] * 3

    history = json.loads(ok(run("history", "--hosts", "cluster", "--json")).stdout)["cluster"]
    assert [(e["action"], e["release"], e["result"]) for e in history] == [
        ("rollout", v1, "ok"), ("rollout", v2, "ok"), ("rollout", v3, "failed"), ("rollback", v1, "ok"),
    ]  # fmt: skip
