"""Unit costs behind a rollout's time, each measured alone on an idle lab host.

They price the fixes proposed in docs/benchmarks.md: what a Python start-up and each group of
imports cost, what resolving the release's digest costs, and what one SSH connection and one
command round trip over an open connection cost (the loops need one per host, `deploy` a dozen).
The SSH calls go through deploy's own transport; the digest is read as `deploy` reads it (its
registry module), and through the local engine with the Docker SDK for comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import docker

from deployer import config, registry
from deployer.commands import RemoteCommand
from deployer.inventory import Host
from deployer.transport import SSHOptions, SSHTransport
from tests.lab import Lab, LabHost

from . import probes
from .contenders import ssh_options
from .phases import ROOT

REPEAT = 10
#: the modules a rollout loads, in the order it loads them, each group timed after the previous
IMPORT_STEPS = (
    ("deployer.cli (typer, rich): all that --help loads", "deployer.cli"),
    ("deployer.config (pydantic, yaml)", "deployer.config"),
    ("deployer.targets.plain, transport, inventory (paramiko)",
     "deployer.targets.plain, deployer.transport, deployer.inventory"),
    ("deployer.registry (urllib.request, ssl): the digest", "deployer.registry"),
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


def _connect(lab: Lab, host: LabHost) -> SSHTransport:
    """A connection made the way `deploy` makes it (its own transport)."""
    target = Host(host.address, host.address, 22, "root", (str(lab.ssh_key),))
    return SSHTransport(target, SSHOptions(known_hosts=(lab.known_hosts,)))


def _run(client: SSHTransport, *argv: str) -> None:
    client.run(RemoteCommand(argv), timeout=60)


def unit_costs(lab: Lab, host: LabHost, tag: str) -> dict[str, list[float]]:
    """Seconds per repetition of each unit of work."""
    costs = import_times()

    inventory = config.load(lab.inventory_path)
    password = config.registry_password(inventory, lab.env())
    costs["registry digest as deploy reads it (TLS trust, one HTTPS HEAD)"] = _repeat(
        lambda: registry.digest(inventory, tag, password=password))
    engine = docker.from_env()
    reference = f"{lab.inventory()['app']['image']}:{tag}"
    auth = {"username": lab.registry_user, "password": lab.registry_password}
    try:
        costs["registry digest via the local engine (docker SDK), for comparison"] = _repeat(
            lambda: engine.images.get_registry_data(reference, auth_config=auth))
    finally:
        engine.close()
    costs["registry digest by one HTTPS HEAD from Python"] = _repeat(lambda: probes.has_tag(lab, tag))

    costs["deploy's SSH transport (paramiko): connect, key exchange, auth, close"] = _repeat(lambda: _connect(lab, host).close())
    client = _connect(lab, host)
    try:
        costs["deploy's SSH transport: one command round trip on an open connection (`true`)"] = _repeat(
            lambda: _run(client, "true"))
        costs["deploy's SSH transport: one round trip running the docker CLI (`docker container ls -q`)"] = _repeat(
            lambda: _run(client, "docker", "container", "ls", "-q"))
    finally:
        client.close()
    costs["OpenSSH: `ssh HOST true` (new connection each time)"] = _repeat(
        lambda: subprocess.run(["ssh", *ssh_options(lab), host.address, "true"], check=True,
                               capture_output=True))
    return costs

