"""Day two on real hosts: the before_switch hook, local after hooks, `deploy run`, `deploy logs`
and `deploy exec` (with a terminal driven through a real PTY)."""

from __future__ import annotations

import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import pexpect
import pytest

from tests.lab import Lab
from tests.lab.lab import LabHost

from .support import _environment, deploy, ok, popen, release, serving

pytestmark = pytest.mark.e2e

SH = ["/bin/busybox", "sh", "-c"]
SECRET = "s3cret-token-value"
ENV = {"APP_TOKEN": SECRET}


def _inventory(lab: Lab, path: Path, **app: object) -> str:
    return str(lab.write_inventory(path, app_overrides=dict(app)))


def _one_offs_left(lab: Lab) -> list[str]:
    """One-off containers on any host, running or not."""
    found = []
    for host in lab.hosts:
        names = lab.host_exec(host, ["docker", "ps", "-a", "-q", "--filter", "label=deployer.one-off"])
        found += names.stdout.split()
    return found


def _volume_file(lab: Lab, host: LabHost, name: str) -> str | None:
    """A file of the web-data volume on *host*, or None when the host lacks it."""
    done = lab.host_exec(host, ["cat", f"/var/lib/docker/volumes/web-data/_data/{name}"], check=False)
    return done.stdout if done.returncode == 0 else None


def _docker_logs_processes(lab: Lab) -> dict[str, str]:
    found = {}
    for host in lab.hosts:
        done = lab.host_exec(host, ["pgrep", "-af", "docker container logs"], check=False)
        if done.stdout.strip():
            found[str(host)] = done.stdout
    return found


def test_hooks_run_logs_and_exec(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    after_env = tmp_path / "after-env"
    inventory = _inventory(
        lab,
        tmp_path / "ok.yaml",
        container={"env": {"GREETING": "hello"}, "secrets": ["APP_TOKEN"]},
        hooks={
            "before_switch": [[*SH, f'echo "migrated $GREETING" >> /data/migrated; test ${{#APP_TOKEN}} = {len(SECRET)}']],
            "after": [f'{{ env; echo ---; }} >> "{after_env}"'],
        },
    )
    v1 = release(lab)
    first = ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "lab", env=ENV))
    assert serving(lab) == ["v1"] * 3

    # the hook ran exactly once, on one host, with the env and the secret
    marks = [_volume_file(lab, host, "migrated") for host in lab.hosts]
    assert marks.count("migrated hello\n") == 1 and marks.count(None) == 2, marks
    assert "before_switch:" in first.stderr
    # the local hook heard how it went, and saw no secret
    told = after_env.read_text()
    assert "DEPLOY_ACTION=rollout" in told and f"DEPLOY_RELEASE={v1}" in told and "DEPLOY_OUTCOME=ok" in told
    assert "DEPLOY_HOSTS=" in told and SECRET not in told

    # a failing hook stops the rollout before any switch, with its output
    lab.commit_app("v2")
    v2 = release(lab)
    failing = _inventory(
        lab, tmp_path / "failing.yaml", container={"secrets": ["APP_TOKEN"]},
        hooks={"before_switch": [[*SH, "echo migration says boom; exit 4"]], "after": [f'env >> "{after_env}"']},
    )
    failed = deploy(lab, "-i", failing, "rollout", "--hosts", "lab", env=ENV)
    assert failed.code == 7, failed.output
    assert "exited 4" in failed.stderr and "migration says boom" in failed.stderr
    assert serving(lab) == ["v1"] * 3
    for host in lab.hosts:
        started = lab.host_exec(host, ["docker", "ps", "-q", "--filter", f"label=deployer.release={v2}"])
        assert started.stdout.strip() == "", "no container of v2 runs"
    assert "DEPLOY_OUTCOME=failed" in after_env.read_text().split("---")[-1]
    history = json.loads(ok(deploy(lab, "-i", failing, "history", "--hosts", "lab", "--json", env=ENV)).stdout)
    hooks = [(e["action"], e["release"], e["result"]) for entries in history.values() for e in entries
             if e["action"] == "before_switch"]
    assert hooks == [("before_switch", v1, "exit 0"), ("before_switch", v2, "exit 4")]
    assert _one_offs_left(lab) == []

    # deploy run: output, exit code, env and secret, nothing left behind, recorded
    ran = deploy(lab, "-i", inventory, "run", "--hosts", "lab", "--",
                 *SH, 'echo "$GREETING from run"; echo "a secret of ${#APP_TOKEN} characters" >&2; exit 3',
                 env=ENV)
    assert ran.code == 3, ran.output
    assert "hello from run" in ran.stdout and f"a secret of {len(SECRET)} characters" in ran.stderr
    assert SECRET not in ran.output
    assert _one_offs_left(lab) == []
    # Ctrl-C stops the one-off container: none left, nor its docker run
    stopped = popen(lab, "-i", inventory, "run", "--hosts", "lab", "--", *SH, "echo started; sleep 60", env=ENV)
    killer = threading.Timer(60, stopped.kill)  # a run that never prints ends the test, not the suite
    killer.daemon = True
    killer.start()
    assert stopped.stdout.readline().strip() == "started"  # type: ignore[union-attr]
    stopped.send_signal(signal.SIGINT)
    _, err = stopped.communicate(timeout=30)
    killer.cancel()
    assert stopped.returncode == 130, err
    assert "run interrupted; its container was stopped and removed" in err
    assert _one_offs_left(lab) == []
    assert all(lab.host_exec(h, ["pgrep", "-f", "docker run"], check=False).stdout == "" for h in lab.hosts)
    history = json.loads(ok(deploy(lab, "-i", inventory, "history", "--hosts", "lab", "--json", env=ENV)).stdout)
    runs = [(e["action"], e["release"], e["result"]) for entries in history.values() for e in entries
            if e["action"] == "run"]
    assert runs == [("run", v1, "exit 3"), ("run", v1, "interrupted")]

    # deploy exec on every host: prefixed lines, the worst exit code
    execd = deploy(lab, "-i", inventory, "exec", "--hosts", "lab", "--", *SH, "cat /www/version; exit 2", env=ENV)
    assert execd.code == 2, execd.output
    assert sorted(line.split("|")[0].strip() for line in execd.stdout.splitlines() if line.endswith("| v1")) == sorted(
        str(host.address) for host in lab.hosts
    )

    # deploy logs -f: new lines from every host; Ctrl-C ends it and leaves nothing on the hosts
    follower = popen(lab, "-i", inventory, "logs", "--hosts", "lab", "-f", "-n", "0", env=ENV)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while len(_docker_logs_processes(lab)) < len(lab.hosts):
            assert time.monotonic() < deadline and follower.poll() is None, "logs -f never started on every host"
            time.sleep(0.2)
        ok(deploy(lab, "-i", inventory, "exec", "--hosts", "lab", "--", *SH, "echo log-marker > /proc/1/fd/1", env=ENV))
        seen: set[str] = set()
        while len(seen) < len(lab.hosts):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.rstrip().endswith("| log-marker"):
                seen.add(line.split("|")[0].strip())
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=10) == 130
    finally:
        follower.kill()
        follower.wait()
        reader.join(10)
        for pipe in (follower.stdout, follower.stderr):
            pipe.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while _docker_logs_processes(lab):
        assert time.monotonic() < deadline, f"docker logs still runs: {_docker_logs_processes(lab)}"
        time.sleep(0.2)


def test_exec_it_gives_a_terminal(lab: Lab, tmp_path: Path) -> None:
    """Runs after the test above, on the release it left running."""
    host = lab.hosts[0]
    if lab.host_exec(host, ["docker", "ps", "-q", "--filter", "label=deployer.app=web"]).stdout.strip() == "":
        release(lab)
        ok(deploy(lab, "rollout", "--hosts", "lab"))
    env = _environment(lab, None)
    env["TERM"] = "xterm"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "deployer", "exec", "--hosts", "lab", "--host", host.address, "-it", "--", "/bin/busybox", "sh"],
        cwd=str(lab.app_repo), env=env, encoding="utf-8", timeout=30, dimensions=(30, 100),
    )
    try:
        child.expect("# ")
        child.sendline("echo $((6 * 7)) cols=$(/bin/busybox stty size)")
        child.expect("42 cols=30 100")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 5, child.before
