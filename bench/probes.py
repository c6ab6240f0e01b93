"""What the benchmark reads and prepares on the lab, outside any timed region.

- per-host counters: an iptables chain in each host counts new SSH connections (SYNs to
  port 22) and the bytes the host receives from the registry (what its dockerd pulls);
- registry counters: bytes stored (``du`` of its storage) and bytes received on its network;
- the image's manifest, read from the registry's API;
- host resets, the `/version` check, and the Python library the Ansible modules need;
- a description of the machine.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.lab import Lab, LabHost
from tests.lab.lab import REGISTRY_CONTAINER, REGISTRY_IP, REGISTRY_STORAGE

T = TypeVar("T")

CHAIN = "DEPLOYBENCH"
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


class ProbeError(RuntimeError):
    """A probe or preparation step failed."""


def parallel(func: Callable[[LabHost], T], hosts: Sequence[LabHost]) -> list[T]:
    """`func` over `hosts` in threads, results in host order."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return list(pool.map(func, hosts))


def _docker_exec(container: str, script: str) -> str:
    done = subprocess.run(["docker", "exec", container, "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise ProbeError(f"{container}: {script!r} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


# ---------------------------------------------------------------- host counters


@dataclass(frozen=True)
class HostCounters:
    """Cumulative counts of one host's iptables chain."""

    ssh_connections: int
    registry_bytes: int

    def __sub__(self, other: HostCounters) -> HostCounters:
        return HostCounters(self.ssh_connections - other.ssh_connections,
                            self.registry_bytes - other.registry_bytes)


def install_counters(lab: Lab, hosts: Sequence[LabHost]) -> None:
    """Put the counting chain first in each host's INPUT chain (it only counts, never drops)."""
    script = (
        f"iptables -w -N {CHAIN} 2>/dev/null || iptables -w -F {CHAIN}; "
        f"iptables -w -A {CHAIN} -p tcp --dport 22 --tcp-flags SYN,ACK,RST SYN -j RETURN && "
        f"iptables -w -A {CHAIN} -p tcp -s {REGISTRY_IP} --sport 5000 -j RETURN && "
        f"{{ iptables -w -C INPUT -j {CHAIN} 2>/dev/null || iptables -w -I INPUT 1 -j {CHAIN}; }}"
    )
    parallel(lambda host: lab.host_exec(host, ["sh", "-c", script]), hosts)


def remove_counters(lab: Lab, hosts: Sequence[LabHost]) -> None:
    """Take the counting chain out of each host again."""
    script = (f"iptables -w -D INPUT -j {CHAIN} 2>/dev/null; iptables -w -F {CHAIN} 2>/dev/null; "
              f"iptables -w -X {CHAIN} 2>/dev/null; true")
    parallel(lambda host: lab.host_exec(host, ["sh", "-c", script], check=False), hosts)


def read_counters(lab: Lab, hosts: Sequence[LabHost]) -> list[HostCounters]:
    """The chain's two counters on each host: SYNs to port 22, bytes from the registry."""

    def one(host: LabHost) -> HostCounters:
        listing = lab.host_exec(host, ["iptables", "-w", "-L", CHAIN, "-n", "-v", "-x"]).stdout
        rules = [line.split() for line in listing.splitlines()[2:] if line.strip()]
        if len(rules) != 2:
            raise ProbeError(f"{host.name}: unexpected {CHAIN} chain:\n{listing}")
        return HostCounters(ssh_connections=int(rules[0][0]), registry_bytes=int(rules[1][1]))

    return parallel(one, hosts)


# ---------------------------------------------------------------- hosts


def reset_hosts(lab: Lab, hosts: Sequence[LabHost]) -> None:
    """Empty each host's engine and deploy state (the host half of `lab.reset()`)."""
    parallel(lambda host: lab.host_exec(host, ["lab-host", "reset"]), hosts)


def serving(lab: Lab, hosts: Sequence[LabHost]) -> list[str]:
    """What each host answers on /version, or `HTTP <status>`."""
    answers = []
    for host in hosts:
        status, body = lab.http_get(host, "/version")
        answers.append(body.strip() if status == 200 else f"HTTP {status}")
    return answers


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class RegistryCounters:
    """Bytes in the registry's storage, and bytes received on its network interface."""

    stored_bytes: int
    received_bytes: int


def registry_counters() -> RegistryCounters:
    """Read the registry container's storage size and eth0 receive counter."""
    out = _docker_exec(REGISTRY_CONTAINER,
                       f"du -sb {REGISTRY_STORAGE} | cut -f1; grep 'eth0:' /proc/net/dev")
    stored, device = out.splitlines()[:2]
    return RegistryCounters(int(stored), int(device.split(":", 1)[1].split()[0]))


def _registry_open(lab: Lab, url: str, method: str) -> Any:
    context = ssl.create_default_context(cafile=str(lab.ca_cert))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    token = base64.b64encode(f"{lab.registry_user}:{lab.registry_password}".encode()).decode()
    request = urllib.request.Request(url, method=method, headers={
        "Accept": MANIFEST_TYPES, "Authorization": f"Basic {token}"})
    return opener.open(request, timeout=10)


def _manifest_url(lab: Lab, tag: str) -> str:
    repository = str(lab.inventory()["app"]["image"]).removeprefix(f"{lab.registry}/")
    return f"https://{lab.registry}/v2/{repository}/manifests/{tag}"


def has_tag(lab: Lab, tag: str) -> bool:
    """Whether the registry holds the app image with this tag."""
    try:
        _registry_open(lab, _manifest_url(lab, tag), "HEAD").close()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise
    except OSError:
        return False
    return True


def manifest(lab: Lab, tag: str) -> dict[str, Any]:
    """The registry's image manifest for the app at this tag."""
    with _registry_open(lab, _manifest_url(lab, tag), "GET") as response:
        data: dict[str, Any] = json.load(response)
    return data


# ---------------------------------------------------------------- the machine


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (done.stdout.strip() or done.stderr.strip() or "?").splitlines()[0]


def machine(lab: Lab) -> dict[str, str]:
    """Cores, memory, kernel, OS, and the versions of the tools measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    os_name = next((line.split("=", 1)[1].strip('"') for line in
                    Path("/etc/os-release").read_text().splitlines() if line.startswith("PRETTY_NAME=")), "?")
    nested = lab.host_exec(lab.hosts[0], ["docker", "version", "--format", "{{.Server.Version}}"],
                           check=False).stdout.strip()
    return {
        "cpu": f"{os.cpu_count()} cores, {cpu}",
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "os": os_name,
        "docker": "engine " + _first_line(["docker", "version", "--format", "{{.Server.Version}}"])
                  + ", client " + _first_line(["docker", "version", "--format", "{{.Client.Version}}"])
                  + f", lab hosts' engine {nested or '?'}",
        "python": platform.python_version(),
        "openssh": _first_line(["ssh", "-V"]),
        "ansible": _first_line(["ansible-playbook", "--version"]),
    }
