"""Faults injected for real: hosts cut off, engines and registries stopped, signals, kills."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.lab import Lab

from .support import deploy, inventory_with, ok, popen, release, serving

pytestmark = pytest.mark.e2e

LOCK = "/var/lib/deploy/apps/web/lock"


def _v1_everywhere_then_commit(lab: Lab, version: str = "v2", mode: str = "ok", **slow: int) -> str:
    release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    lab.commit_app(version, mode=mode, **slow)
    return release(lab)


def _no_lock_left(lab: Lab) -> bool:
    return all(lab.host_exec(h, ["test", "-e", LOCK], check=False).returncode == 1 for h in lab.hosts)


def _in_health_wait(lab: Lab) -> bool:
    """Host 1 runs the new release ("slow": it serves at once, /health only later)."""
    return lab.http_get(lab.hosts[0], "/version")[1].strip() == "v2" and lab.http_get(lab.hosts[0], "/health")[0] != 200


def _wait_for(condition, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_unreachable_host_before_the_rollout_changes_nothing(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab)
    lab.disconnect(lab.hosts[2])
    try:
        inventory = inventory_with(lab, tmp_path)
        result = deploy(lab, "-i", inventory, "rollout", "--hosts", "lab")
    finally:
        lab.connect(lab.hosts[2])
    assert result.code == 5, result.output
    assert f"{lab.hosts[2].address}: cannot connect" in result.stderr
    assert "nothing was changed" in result.stderr
    assert serving(lab) == ["v1", "v1", "v1"]
    assert _no_lock_left(lab)


def test_status_shows_an_unreachable_host_as_a_row_and_the_others_as_usual(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    lab.disconnect(lab.hosts[2])
    try:
        result = deploy(lab, "status", "--hosts", "lab", "--json")
    finally:
        lab.connect(lab.hosts[2])
    assert result.code == 5, result.output
    rows = {row["host"]: row for row in json.loads(result.stdout)["hosts"]}
    assert rows[lab.hosts[2].address]["state"] == "unreachable"
    assert [rows[h.address]["state"] for h in lab.hosts[:2]] == ["running", "running"]
    assert "1 host(s) could not be reached" in result.stderr


def test_host_lost_in_a_later_batch_puts_switched_hosts_back(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab, "v2", mode="slow", slow_seconds=3)
    running = popen(lab, "rollout", "--hosts", "lab")
    _wait_for(lambda: lab.http_get(lab.hosts[0], "/version")[1].strip() == "v2", "host1 to serve v2", 90)
    lab.disconnect(lab.hosts[2])
    try:
        out, err = running.communicate(timeout=120)
    finally:
        lab.connect(lab.hosts[2])
    assert running.returncode == 7, out + err
    assert serving(lab) == ["v1", "v1", "v1"]
    assert lab.hosts[2].address in out and ("unreachable" in out or "did not finish in time" in out)


def test_engine_down_on_one_host_means_nothing_is_replaced(clean_lab: Lab) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab)
    lab.stop_dockerd(lab.hosts[1])
    try:
        result = deploy(lab, "rollout", "--hosts", "lab")
        status = deploy(lab, "status", "--hosts", "lab", "--json")
    finally:
        lab.start_dockerd(lab.hosts[1])
    rows = {row["host"]: (row["state"], row["release"]) for row in json.loads(status.stdout)["hosts"]}
    assert rows[lab.hosts[1].address] == ("error", None), "status still shows the host, with its error"
    assert [rows[lab.hosts[0].address][0], rows[lab.hosts[2].address][0]] == ["running", "running"]
    assert status.code == 7 and "1 host(s) could not be read" in status.stderr, status.output
    assert result.code == 7, result.output
    assert (
        f"{lab.hosts[1].address}: take the lock and read containers and history failed: Cannot connect to the Docker daemon"
        in result.stderr
    )
    assert "nothing was changed" in result.stderr
    assert serving(lab)[0::2] == ["v1", "v1"]
    assert _no_lock_left(lab)


def test_pull_failing_on_one_host_replaces_nothing_anywhere(clean_lab: Lab) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab)
    registry_ip = lab.registry.split(":")[0]
    route = ["ip", "route", "add", "prohibit", f"{registry_ip}/32"]
    lab.host_exec(lab.hosts[1], route)
    try:
        result = deploy(lab, "rollout", "--hosts", "lab")
    finally:
        lab.host_exec(lab.hosts[1], ["ip", "route", "del", "prohibit", f"{registry_ip}/32"])
    assert result.code == 7, result.output
    assert "pull failed, so no container was replaced" in result.stderr
    assert f"{lab.hosts[1].address}: docker pull failed" in result.stderr
    assert serving(lab) == ["v1", "v1", "v1"]
    assert _no_lock_left(lab)


def test_registry_down_or_refusing_stops_the_rollout_before_any_host(clean_lab: Lab) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab)
    refused = deploy(lab, "rollout", "--hosts", "lab", env={"DEPLOY_REGISTRY_PASSWORD": "wrong-password"})
    assert refused.code == 4, refused.output
    assert "wrong-password" not in refused.output
    lab.stop_registry()
    down = deploy(lab, "rollout", "--hosts", "lab")
    assert down.code == 4, down.output
    assert serving(lab) == ["v1", "v1", "v1"]


def test_frozen_engine_fails_the_host_within_the_default_deadline(clean_lab: Lab) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab)
    host = lab.hosts[1]
    lab.host_exec(host, ["pkill", "-STOP", "-x", "dockerd"])
    try:
        # The default settings: a state read gets ssh.command_timeout (30 s), not a pull's deadline.
        result = deploy(lab, "rollout", "--hosts", "lab", timeout=150)
    finally:
        lab.host_exec(host, ["pkill", "-CONT", "-x", "dockerd"])
    assert result.code == 7, result.output
    assert (
        f"{host.address}: take the lock and read containers and history did not finish in time (30 s); gave up waiting"
        in result.stderr
    )
    assert "nothing was changed" in result.stderr
    assert serving(lab) == ["v1", "v1", "v1"]
    assert _no_lock_left(lab)


HUNG_PULL = "sleep 86399"


def test_sigterm_during_a_hung_pull_ends_the_run_at_once(clean_lab: Lab) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab)
    host = lab.hosts[1]
    # On this host `docker ... pull` never ends; every other docker command works.
    wrapper = f'#!/bin/sh\nfor a; do [ "$a" = pull ] && exec {HUNG_PULL}; done\nexec /usr/bin/docker "$@"\n'
    lab.host_exec(host, ["sh", "-c", "cat > /usr/local/bin/docker && chmod 755 /usr/local/bin/docker"], input=wrapper.encode())
    try:
        running = popen(lab, "rollout", "--hosts", "lab")
        _wait_for(lambda: lab.host_exec(host, ["pgrep", "-f", HUNG_PULL], check=False).returncode == 0, "the hung pull")
        running.send_signal(signal.SIGTERM)
        out, err = running.communicate(timeout=90)
    finally:
        lab.host_exec(host, ["rm", "-f", "/usr/local/bin/docker"])
        lab.host_exec(host, ["pkill", "-f", HUNG_PULL], check=False)
    assert running.returncode == 130, out + err
    assert "rollout interrupted while pulling; no container was replaced" in err
    assert serving(lab) == ["v1", "v1", "v1"]
    assert _no_lock_left(lab)


@pytest.mark.parametrize("phase", ["pull", "batch"])
def test_ctrl_c_puts_hosts_back_and_releases_the_lock(clean_lab: Lab, phase: str) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab, "v2", mode="slow", slow_seconds=4)
    running = popen(lab, "rollout", "--hosts", "lab")
    if phase == "pull":
        _wait_for(lambda: all(lab.host_exec(h, ["test", "-f", LOCK], check=False).returncode == 0 for h in lab.hosts), "locks")
    else:
        _wait_for(lambda: _in_health_wait(lab), "host1 to wait for the new release's health")
    running.send_signal(signal.SIGINT)
    out, err = running.communicate(timeout=120)
    assert running.returncode == 130, out + err
    assert serving(lab) == ["v1", "v1", "v1"]
    assert _no_lock_left(lab)


def test_killed_run_leaves_a_stale_lock_that_can_be_broken(clean_lab: Lab) -> None:
    lab = clean_lab
    v2 = _v1_everywhere_then_commit(lab, "v2", mode="slow", slow_seconds=4)
    running = popen(lab, "rollout", "--hosts", "lab")
    _wait_for(lambda: _in_health_wait(lab), "host1 to wait for the new release's health")
    running.kill()
    running.communicate()
    blocked = deploy(lab, "rollout", "--hosts", "lab")
    assert blocked.code == 6, blocked.output
    assert "the lock is stale" in blocked.stderr and "--break-lock" in blocked.stderr
    ok(deploy(lab, "rollout", "--hosts", "lab", "--break-lock"))
    assert serving(lab) == ["v2", "v2", "v2"]
    assert v2
    assert _no_lock_left(lab)


def test_two_rollouts_started_together_exactly_one_proceeds(clean_lab: Lab) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab)
    runs = [popen(lab, "rollout", "--hosts", "lab") for _ in range(2)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert sorted(run.returncode for run in runs) == [0, 6], outputs
    assert serving(lab) == ["v2", "v2", "v2"]


def test_release_that_crashes_in_the_watch_window_is_a_failure(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    _v1_everywhere_then_commit(lab, "v2", mode="crash")
    inventory = inventory_with(lab, tmp_path, healthcheck={"watch": 6})
    result = deploy(lab, "-i", inventory, "rollout", "--hosts", "lab")
    assert result.code == 7, result.output
    assert "watch window" in result.output
    assert serving(lab) == ["v1", "v1", "v1"]


def test_bad_input_gets_one_message_and_its_exit_code(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    release(lab)
    nothing = deploy(lab, "rollout", "--hosts", "nowhere")
    assert nothing.code == 2 and "'nowhere' is neither a group nor a host" in nothing.stderr
    missing = deploy(lab, "rollout", "--hosts", "lab", "--tag", "0000deadbeef")
    assert missing.code in (2, 4) and "0000deadbeef" in missing.stderr
    no_previous = deploy(lab, "rollback", "--hosts", "lab")
    assert no_previous.code == 2 and "no previous release" in no_previous.stderr
    for result in (nothing, missing, no_previous):
        assert "Traceback" not in result.output


def _fill(lab: Lab, host: object, leave_pages: int) -> None:
    """Fill the host's state file system (a small tmpfs) until only *leave_pages* 4 KiB pages are free."""
    script = (
        "i=0; while dd if=/dev/zero of=/var/lib/deploy/apps/fill$i bs=4096 count=1 2>/dev/null; do i=$((i+1)); done; "
        f"j=0; while [ $j -lt {leave_pages + 1} ]; do rm -f /var/lib/deploy/apps/fill$j; j=$((j+1)); done; "
        "dd if=/dev/zero of=/var/lib/deploy/apps/last bs=4096 count=1 2>/dev/null; true"
    )
    lab.host_exec(host, ["sh", "-c", script])


def test_a_full_disk_never_corrupts_history_nor_leaves_an_empty_lock(clean_lab: Lab) -> None:
    lab = clean_lab
    full = lab.hosts[2]
    lab.host_exec(full, ["sh", "-c", "mkdir -p /var/lib/deploy/apps && mount -t tmpfs -o size=256k tmpfs /var/lib/deploy/apps"])
    try:
        v1 = release(lab)
        ok(deploy(lab, "rollout", "--hosts", "lab"))
        lab.commit_app("v2")
        v2 = release(lab)

        _fill(lab, full, leave_pages=0)  # no room even for the lock
        locked_out = deploy(lab, "rollout", "--hosts", "lab")
        assert locked_out.code != 0 and "No space left on device" in locked_out.stderr, locked_out.output
        assert lab.host_exec(full, ["test", "-e", LOCK], check=False).returncode == 1, "no empty lock is left"
        assert serving(lab) == ["v1", "v1", "v1"]

        lab.host_exec(full, ["sh", "-c", "rm -f /var/lib/deploy/apps/last"])  # room for the lock, not for history
        unrecorded = deploy(lab, "rollout", "--hosts", "lab")
        assert unrecorded.code == 7, unrecorded.output
        assert "history not written" in unrecorded.stdout + unrecorded.stderr
        assert serving(lab) == ["v1", "v1", "v1"], "the host that cannot record is put back, and the fleet with it"
        history = lab.host_exec(full, ["cat", "/var/lib/deploy/apps/web/history.jsonl"]).stdout.splitlines()
        assert [json.loads(line)["release"] for line in history] == [v1], "whole lines only"

        lab.host_exec(full, ["sh", "-c", "rm -f /var/lib/deploy/apps/fill*"])
        ok(deploy(lab, "rollout", "--hosts", "lab"))
        assert serving(lab) == ["v2", "v2", "v2"]
        ok(deploy(lab, "rollback", "--hosts", "lab"))
        assert serving(lab) == ["v1", "v1", "v1"], "rollback goes to the release that really ran before"
        assert v2
    finally:
        lab.host_exec(full, ["umount", "/var/lib/deploy/apps"], check=False)
