"""Roles on real hosts: a web role and a worker role with its own command, moved by one rollout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.lab import Lab

from .support import deploy, ok, release, serving

pytestmark = pytest.mark.e2e

#: the sample image's ENTRYPOINT is busybox httpd on port 8080: the worker's command (its CMD)
#: moves it to port 9090, and an unknown option makes it exit at once
WORKER_CMD = ["-p", "9090"]
CRASHING_CMD = ["-Z"]


def _inventory(lab: Lab, path: Path, worker_cmd: list[str]) -> str:
    workers = lab.hosts[1:]
    groups = {"lab": [h.address for h in lab.hosts], "workers": [h.address for h in workers]}
    roles = {"web": {"hosts": ["lab"]}, "worker": {"hosts": ["workers"], "cmd": worker_cmd, "env": {"ROLE": "worker"}}}
    return str(lab.write_inventory(path, hosts=groups, app_overrides={"roles": roles}))


def _running(lab: Lab) -> dict[str, list[str]]:
    """Per lab host, its running containers of the app, by name."""
    found = {}
    for host in lab.hosts:
        listed = lab.host_exec(
            host, ["docker", "ps", "--filter", "label=deployer.app=web", "--format", "{{.Names}}"]
        ).stdout
        found[host.name] = sorted(listed.split())
    return found


def _inspect(lab: Lab, host: object, name: str, template: str) -> str:
    return lab.host_exec(host, ["docker", "inspect", "--format", template, name]).stdout.strip()  # type: ignore[arg-type]


def test_web_and_worker_roles_roll_out_narrow_and_go_back_together(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    first, *workers = lab.hosts
    inventory = _inventory(lab, tmp_path / "roles.yaml", WORKER_CMD)

    v1 = release(lab)
    ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "lab"))
    assert serving(lab) == ["v1"] * 3
    assert _running(lab) == {
        first.name: [f"web-{v1}"],
        **{host.name: [f"web-{v1}", f"web-worker-{v1}"] for host in workers},
    }
    for host in workers:
        name = f"web-worker-{v1}"
        assert json.loads(_inspect(lab, host, name, "{{json .Config.Cmd}}")) == WORKER_CMD
        assert _inspect(lab, host, name, "{{.Config.Labels}}").count("deployer.role:worker") == 1
        answer = lab.host_exec(host, ["docker", "exec", name, "/bin/busybox", "wget", "-qO-", "http://127.0.0.1:9090/version"])
        assert answer.stdout.strip() == "v1", "the worker runs its own command"
        env = lab.host_exec(host, ["docker", "exec", name, "/bin/busybox", "env"]).stdout.split()
        assert "ROLE=worker" in env

    lab.commit_app("v2")
    v2 = release(lab)
    ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "lab", "--roles", "worker"))
    assert serving(lab) == ["v1"] * 3, "--roles worker leaves the web role alone"
    assert _running(lab) == {
        first.name: [f"web-{v1}"],
        **{host.name: [f"web-{v1}", f"web-worker-{v2}"] for host in workers},
    }

    lab.commit_app("v3")
    v3 = release(lab)
    crashing = _inventory(lab, tmp_path / "crashing.yaml", CRASHING_CMD)
    failed = deploy(lab, "-i", crashing, "rollout", "--hosts", "lab")
    assert failed.code == 7, failed.output
    assert f"rollout of {v3} failed on 1 host(s); every switched host was put back" in failed.stderr
    assert f"web-worker-{v3} the container exited" in failed.stdout
    assert serving(lab) == ["v1"] * 3, "the web role is back on every host, the one switched first too"
    assert _running(lab) == {
        first.name: [f"web-{v1}"],
        **{host.name: [f"web-{v1}", f"web-worker-{v2}"] for host in workers},
    }, "every role of every host on the release it ran before"

    status = json.loads(ok(deploy(lab, "-i", inventory, "status", "--hosts", "lab", "--json")).stdout)
    assert [(row["host"], row["role"], row["release"]) for row in status["hosts"]] == [
        (first.address, "web", v1),
        *[(host.address, role, release_) for host in workers for role, release_ in (("web", v1), ("worker", v2))],
    ]
    narrowed = json.loads(
        ok(deploy(lab, "-i", inventory, "status", "--hosts", "lab", "--roles", "worker", "--json")).stdout
    )
    assert [(row["host"], row["role"]) for row in narrowed["hosts"]] == [(host.address, "worker") for host in workers]
    table = ok(deploy(lab, "-i", inventory, "status", "--hosts", "lab")).stdout
    assert re.search(r"\bhost\W+role\W+release\b", table), table

    history = json.loads(ok(deploy(lab, "-i", inventory, "history", "--hosts", "workers", "--json")).stdout)
    before = [("web", v1, "ok"), ("worker", v1, "ok"), ("worker", v2, "ok")]
    assert [(e["role"], e["release"], e["result"]) for e in history[workers[0].address]] == [
        *before,
        ("web", v3, "failed"),
        ("worker", v3, "failed"),
    ]
    assert [(e["role"], e["release"], e["result"]) for e in history[workers[1].address]] == before
