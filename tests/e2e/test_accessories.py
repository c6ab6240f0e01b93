"""An exporter-like accessory beside the app on every lab host: booted, reached by name from the
app's container, rebooted with new settings while the app keeps answering, untouched by rollouts
and rollbacks, its logs followed and stopped, and removed with its volume kept."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab.exporter_image import ensure_exporter_image

from .load import Load, Target
from .support import deploy, ok, popen, release, serving

pytestmark = pytest.mark.e2e

NAME = "exporter"
CONTAINER = f"web-{NAME}"
TOKEN = "t0ken\nwith = and a newline"


def _inventory(lab: Lab, path: Path, image: str, label: str) -> str:
    accessory = {
        "image": image,
        "hosts": ["lab"],
        "cmd": ["9100"],
        "env": {"LABEL": label},
        "secrets": ["EXPORTER_TOKEN"],
        "volumes": ["exporter-data:/data"],
        "ports": ["9100:9100"],
        "stop_timeout": 1,
        "healthcheck": {"path": "/metrics", "port": 9100, "timeout": 20, "interval": 0.1},
    }
    return str(lab.write_inventory(path, accessories={NAME: accessory}))


def _run(lab: Lab, *args: str) -> str:
    return ok(deploy(lab, *args, env={"EXPORTER_TOKEN": TOKEN})).stdout


def _ids(lab: Lab) -> list[str]:
    """The accessory's container id and state on each host."""
    found = []
    for host in lab.hosts:
        done = lab.host_exec(host, ["docker", "container", "inspect", "--format", "{{.Id}} {{.State.Status}}", CONTAINER])
        found.append(done.stdout.strip())
    return found


def _from_the_app(lab: Lab) -> list[str]:
    """What the app's running container on each host gets from http://exporter:9100/metrics."""
    answers = []
    for host in lab.hosts:
        app = lab.host_exec(host, ["docker", "ps", "--filter", "label=deployer.app=web", "--format", "{{.Names}}"])
        [name] = app.stdout.split()
        got = lab.host_exec(host, ["docker", "exec", name, "/bin/busybox", "wget", "-qO-",
                                   f"http://{NAME}:9100/metrics"])
        answers.append(got.stdout)
    return answers


def _metrics(label: str, boots: int) -> str:
    return f'exporter_info{{label="{label}"}} 1\nexporter_boots {boots}\n'


def _docker_logs_left(lab: Lab) -> list[str]:
    """`docker container logs` processes still running on the hosts."""
    left = []
    for host in lab.hosts:
        found = lab.host_exec(host, ["pgrep", "-af", "docker container logs"], check=False).stdout.strip()
        left += [f"{host.name}: {line}" for line in found.splitlines()]
    return left


def test_an_exporter_beside_the_app(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    image = ensure_exporter_image(lab)
    one = _inventory(lab, tmp_path / "one.yaml", image, "one")
    two = _inventory(lab, tmp_path / "two.yaml", image, "two")
    v1 = release(lab)
    _run(lab, "-i", one, "rollout", "--hosts", "lab")

    # boot on every host of the group; the app reaches it by name; a second boot changes nothing
    booted = _run(lab, "-i", one, "accessory", "boot", "all", "--hosts", "lab")
    assert booted.count("created") == 3, booted
    assert _from_the_app(lab) == [_metrics("one", 1)] * 3
    ids = _ids(lab)
    assert all(state.endswith(" running") for state in ids), ids
    again = _run(lab, "-i", one, "accessory", "boot", NAME)
    assert again.count("running") == 3 and "created" not in again, again
    environment = lab.host_exec(lab.hosts[0], ["docker", "exec", CONTAINER, "/bin/busybox", "env"]).stdout
    assert f"\nEXPORTER_TOKEN={TOKEN}\n" in "\n" + environment

    status = json.loads(_run(lab, "-i", one, "status", "--hosts", "lab", "--json"))
    assert [row["release"] for row in status["hosts"]] == [v1] * 3
    assert [(row["accessory"], row["state"], row["config"]) for row in status["accessories"]] == [
        (NAME, "running", "current")
    ] * 3

    # a rollout and a rollback leave it running, the same container; the new release reaches it too
    lab.commit_app("v2")
    release(lab)
    _run(lab, "-i", one, "rollout", "--hosts", "lab")
    assert serving(lab) == ["v2"] * 3
    assert _from_the_app(lab) == [_metrics("one", 1)] * 3
    _run(lab, "-i", one, "rollback", "--hosts", "lab")
    assert serving(lab) == ["v1"] * 3
    assert _ids(lab) == ids

    # a reboot with a changed env, one host at a time, while the app keeps answering
    targets = [Target(host.address, 8080) for host in lab.hosts]
    with Load(targets, rate=20, max_seconds=120) as load:
        rebooted = _run(lab, "-i", two, "accessory", "reboot", NAME)
    assert rebooted.count("rebooted") == 3, rebooted
    summary = load.summary()
    assert summary.total > 20 and summary.failed == 0, summary
    assert _from_the_app(lab) == [_metrics("two", 2)] * 3, "new settings; the volume kept the count"
    assert _ids(lab) != ids

    # logs, prefixed by host; following them ends on Ctrl-C and leaves no docker logs on the hosts
    logs = _run(lab, "-i", two, "accessory", "logs", NAME, "-n", "50")
    for host in lab.hosts:
        assert f"{host.address} | exporter up: boot 2, label two" in logs, logs
    follower = popen(lab, "-i", two, "accessory", "logs", NAME, "-f", "-n", "50")
    assert follower.stdout is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(follower.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(30)
    assert first and " | exporter up: boot 2, label two" in first[0], first
    follower.send_signal(signal.SIGINT)
    _, stderr = follower.communicate(timeout=30)
    assert follower.returncode == 130, stderr
    deadline = time.monotonic() + 10
    while _docker_logs_left(lab) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _docker_logs_left(lab) == []

    # remove: the container goes, its named volume stays; the app still answers
    removed = _run(lab, "-i", two, "accessory", "remove", NAME, "--yes")
    assert removed.count("removed") == 3, removed
    for host in lab.hosts:
        left = lab.host_exec(host, ["docker", "ps", "-a", "--filter", f"name={CONTAINER}", "--format", "{{.Names}}"])
        assert left.stdout.strip() == ""
        volumes = lab.host_exec(host, ["docker", "volume", "ls", "--format", "{{.Name}}"]).stdout.split()
        assert "exporter-data" in volumes
    assert serving(lab) == ["v1"] * 3
