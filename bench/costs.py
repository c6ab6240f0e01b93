"""Unit costs behind a rollout's time, each measured alone on an idle lab host.

They price the fixes proposed in docs/benchmarks.md: what a Python start-up and each group of
imports cost, what resolving the release's digest costs, and what one SSH connection and one
command round trip over an open connection cost (the loops need one per host, `deploy` a dozen).
The SSH and registry calls use paramiko and the Docker SDK directly, as `deploy` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import docker
import paramiko

from tests.lab import Lab, LabHost

from . import probes
from .contenders import ssh_options
from .phases import ROOT

REPEAT = 10
#: the modules a rollout loads, in the order it loads them, each group timed after the previous
IMPORT_STEPS = (
    ("deployer.cli (typer, rich): all that --help loads", "deployer.cli"),
    ("deployer.config (pydantic, yaml)", "deployer.config"),
    ("deployer.orchestrator, transport, inventory (paramiko)",
     "deployer.orchestrator, deployer.transport, deployer.inventory"),
    ("deployer.images and the Docker SDK (requests): only for the digest", "deployer.images, docker"),
)


def _repeat(action: Callable[[], object], times: int = REPEAT) -> list[float]:
    action()  # warm caches
    values = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        values.append(time.perf_counter() - started)
    return values


def import_times(times: int = REPEAT) -> dict[str, list[float]]:
    """Seconds each group of IMPORT_STEPS adds, in a fresh interpreter each time; and the interpreter."""
    code = "import time, json\nstarted = time.perf_counter()\nsteps = []\n" + "".join(
        f"import {modules}\nnow = time.perf_counter(); steps.append(now - started); started = now\n"
        for _, modules in IMPORT_STEPS) + "print(json.dumps(steps))"
    found = {"python -c pass (the interpreter alone)": _repeat(
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True), times)}
    for _ in range(times):
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                              cwd=ROOT)
        for (name, _), seconds in zip(IMPORT_STEPS, json.loads(done.stdout), strict=True):
            found.setdefault(f"import {name}", []).append(seconds)
    return found


def _connect(lab: Lab, host: LabHost) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, username="root", key_filename=str(lab.ssh_key),
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def _run(client: paramiko.SSHClient, command: str) -> None:
    _, stdout, _ = client.exec_command(command, timeout=60)
    stdout.read()
    if stdout.channel.recv_exit_status() != 0:
        raise RuntimeError(f"{command!r} failed")


def unit_costs(lab: Lab, host: LabHost, tag: str) -> dict[str, list[float]]:
    """Seconds per repetition of each unit of work."""
    costs = import_times()

    engine = docker.from_env()
    reference = f"{lab.inventory()['app']['image']}:{tag}"
    auth = {"username": lab.registry_user, "password": lab.registry_password}
    try:
        costs["registry digest via the local engine (docker SDK, as deploy does)"] = _repeat(
            lambda: engine.images.get_registry_data(reference, auth_config=auth))
    finally:
        engine.close()
    costs["registry digest by one HTTPS HEAD from Python"] = _repeat(lambda: probes.has_tag(lab, tag))

    costs["paramiko: connect, key exchange, auth, close"] = _repeat(lambda: _connect(lab, host).close())
    client = _connect(lab, host)
    try:
        costs["paramiko: one command round trip on an open connection (`true`)"] = _repeat(
            lambda: _run(client, "true"))
        costs["paramiko: one round trip running the docker CLI (`docker container ls -q`)"] = _repeat(
            lambda: _run(client, "docker container ls -q"))
    finally:
        client.close()
    costs["OpenSSH: `ssh HOST true` (new connection each time)"] = _repeat(
        lambda: subprocess.run(["ssh", *ssh_options(lab), host.address, "true"], check=True,
                               capture_output=True))
    return costs

