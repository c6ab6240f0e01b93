"""`app.registry: false`: releases travel from the operator's machine over each host's SSH connection."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tests.lab import Lab, LabHost

from .support import deploy, inventory_with, ok, popen, serving

pytestmark = pytest.mark.e2e

LOCK = "/var/lib/deploy/apps/web/lock"
HUNG_PULL = "sleep 86398"
COUNTER = "DEPLOYNOREG"
#: incompressible bytes the v2 commit adds to the app's top layer: its "code change"
BUNDLE_BYTES = 1 << 20


def _ours(cache: Path) -> list[str]:
    """Processes of this machine started by the test's `deploy` runs (they carry its cache path)."""
    mark = f"XDG_CACHE_HOME={cache}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def _listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _temp_files_naming(cache: Path) -> list[Path]:
    found = []
    for path in Path(tempfile.gettempdir()).iterdir():
        try:
            if path.is_file() and path.stat().st_size < 1 << 20 and str(cache).encode() in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def _forwards(lab: Lab, host: LabHost) -> list[str]:
    """Ports sshd listens on besides 22: the forwards it holds."""
    lines = lab.host_exec(host, ["ss", "-Hltnp"]).stdout.splitlines()
    return [line.split()[3] for line in lines if '"sshd"' in line and not line.split()[3].endswith(":22")]


def _port_names(lab: Lab, host: LabHost) -> list[str]:
    """Image names on the host that carry a loopback registry's port."""
    listing = lab.host_exec(host, ["docker", "image", "ls", "--digests", "--format",
                                   "{{.Repository}}:{{.Tag}}@{{.Digest}}"]).stdout
    return [line for line in listing.splitlines() if line.startswith("127.0.0.1:")]


def _nothing_left(lab: Lab, cache: Path, port: int) -> None:
    assert _ours(cache) == [], "no local registry (nor any other child) outlives deploy"
    assert not _listens(port), f"nothing listens on 127.0.0.1:{port} any more"
    assert _temp_files_naming(cache) == [], "no config file is left behind"
    outer = [name for image in lab.client.images.list()
             for name in [*image.tags, *image.attrs.get("RepoDigests", [])] if name.startswith("127.0.0.1:")]
    assert outer == [], "the local engine keeps no name carrying the port"
    for host in lab.hosts:
        assert _forwards(lab, host) == [], f"{host.name}: sshd holds no forward"
        assert _port_names(lab, host) == [], f"{host.name}: no image name carries the port"
        config = lab.host_exec(host, ["cat", "/root/.docker/config.json"], check=False).stdout
        assert "127.0.0.1" not in config, f"{host.name}: no registry login is left"
        assert lab.host_exec(host, ["test", "-e", LOCK], check=False).returncode == 1


def _bytes_in_over_ssh(lab: Lab, host: LabHost) -> int:
    listing = lab.host_exec(host, ["iptables", "-w", "-L", COUNTER, "-n", "-v", "-x"]).stdout
    return int(listing.splitlines()[2].split()[1])


def _layers(cache: Path, tag: str) -> dict[str, int]:
    """The layers of acme/web:TAG and their sizes, read from the local registry's storage."""
    v2 = cache / "deploy" / "registry" / "web" / "docker" / "registry" / "v2"
    digest = (v2 / "repositories/acme/web/_manifests/tags" / tag / "current/link").read_text().strip()
    blob = v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
    return {layer["digest"]: layer["size"] for layer in json.loads(blob.read_text())["layers"]}


def _served_port(output: str) -> int:
    found = re.search(r"local registry on 127\.0\.0\.1:(\d+)", output)
    assert found, output
    return int(found.group(1))


def test_rollout_and_rollback_without_a_registry_leave_nothing_behind(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    lab.stop_registry()  # not one byte may come from it
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache)}
    inventory = inventory_with(lab, tmp_path, image="acme/web", registry=False, rollout={"batch_size": 3})

    built = ok(deploy(lab, "-i", inventory, "build", env=env))
    v1 = built.stdout.strip().rsplit(":", 1)[1]
    assert "in the local registry" in built.output and "could not remove" not in built.output
    pushed = ok(deploy(lab, "-i", inventory, "push", env=env))
    assert "there is no registry to push to" in pushed.output
    first = ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "lab", env=env))
    assert serving(lab) == ["v1", "v1", "v1"]
    _nothing_left(lab, cache, _served_port(first.output))

    (lab.app_repo / "www" / "bundle.bin").write_bytes(os.urandom(BUNDLE_BYTES))
    lab.commit_app("v2")
    v2 = ok(deploy(lab, "-i", inventory, "build", env=env)).stdout.strip().rsplit(":", 1)[1]
    host = lab.hosts[0]
    counter = (f"iptables -w -N {COUNTER} && iptables -w -A {COUNTER} -p tcp --dport 22 -j RETURN && "
               f"iptables -w -I INPUT 1 -j {COUNTER}")
    lab.host_exec(host, ["sh", "-c", counter])
    try:
        second = ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "lab", env=env))
        received = _bytes_in_over_ssh(lab, host)
    finally:
        lab.host_exec(host, ["sh", "-c", f"iptables -w -D INPUT -j {COUNTER}; iptables -w -F {COUNTER}; "
                                          f"iptables -w -X {COUNTER}"], check=False)
    assert serving(lab) == ["v2", "v2", "v2"]
    old, new = _layers(cache, v1), _layers(cache, v2)
    changed = sum(size for digest, size in new.items() if digest not in old)
    assert BUNDLE_BYTES <= changed < 2 * BUNDLE_BYTES, (old, new)
    assert received <= 1.1 * changed, f"{host.name} received {received} bytes for a {changed}-byte layer"
    _nothing_left(lab, cache, _served_port(second.output))

    ok(deploy(lab, "-i", inventory, "rollback", "--hosts", "lab", env=env))
    assert serving(lab) == ["v1", "v1", "v1"]
    statuses = json.loads(ok(deploy(lab, "-i", inventory, "status", "--hosts", "lab", "--json", env=env)).stdout)
    assert {row["release"] for row in statuses["hosts"]} == {v1}

    # Ctrl-C while a host is pulling through its forward.
    lab.commit_app("v3")
    ok(deploy(lab, "-i", inventory, "build", env=env))
    stuck = lab.hosts[1]
    wrapper = f'#!/bin/sh\nfor a; do [ "$a" = pull ] && exec {HUNG_PULL}; done\nexec /usr/bin/docker "$@"\n'
    lab.host_exec(stuck, ["sh", "-c", "cat > /usr/local/bin/docker && chmod 755 /usr/local/bin/docker"],
                  input=wrapper.encode())
    try:
        running = popen(lab, "-i", inventory, "rollout", "--hosts", "lab", env=env)
        deadline = time.monotonic() + 60
        while lab.host_exec(stuck, ["pgrep", "-f", HUNG_PULL], check=False).returncode != 0:
            assert time.monotonic() < deadline and running.poll() is None, "the pull never started"
            time.sleep(0.1)
        assert len(_forwards(lab, stuck)) == 1, "the host reaches this machine's registry while it pulls"
        assert _ours(cache), "the local registry runs during the transfer"
        running.send_signal(signal.SIGINT)
        out, err = running.communicate(timeout=60)
    finally:
        lab.host_exec(stuck, ["rm", "-f", "/usr/local/bin/docker"])
        lab.host_exec(stuck, ["pkill", "-f", HUNG_PULL], check=False)
    assert running.returncode == 130, out + err
    assert "rollout interrupted while pulling; no container was replaced" in err
    assert serving(lab) == ["v1", "v1", "v1"]
    _nothing_left(lab, cache, _served_port(out + err))
