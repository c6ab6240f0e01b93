"""SSH the way users have it: keys in ssh-agent, hosts behind a ProxyJump from ~/.ssh/config."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import Lab

from .support import deploy, ok, release

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(clean_lab: Lab) -> Iterator[dict[str, str]]:
    """An ssh-agent holding the lab key, as environment variables."""
    started = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(
        part.split("=", 1) for line in started.splitlines() for part in line.split(";")[:1] if "=" in part
    )
    subprocess.run(["ssh-add", "-q", str(clean_lab.ssh_key)], env={**os.environ, **env}, check=True)
    try:
        yield env
    finally:
        subprocess.run(["ssh-agent", "-k"], env={**os.environ, **env}, capture_output=True, check=False)


def test_keys_from_ssh_agent(clean_lab: Lab, agent: dict[str, str], tmp_path: Path) -> None:
    inventory = str(clean_lab.write_inventory(tmp_path / "inv.yaml", ssh={"identity_file": None}))
    without = deploy(clean_lab, "-i", inventory, "status", "--hosts", "lab", env={"SSH_AUTH_SOCK": "", "HOME": str(tmp_path)})
    assert without.code == 5 and "no SSH key to log in as root with" in without.stderr, without.output
    with_agent = deploy(clean_lab, "-i", inventory, "status", "--hosts", "lab", "--json", env={**agent, "HOME": str(tmp_path)})
    assert with_agent.code == 0, with_agent.output
    assert len(json.loads(with_agent.stdout)["hosts"]) == 3


def test_host_behind_a_proxy_jump_from_ssh_config(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    jump, other = lab.hosts[0], lab.hosts[1]
    # "127.0.0.1" is the jump host's own sshd only when reached through the jump host; from this
    # machine nothing answers there, so a working rollout proves the jump was used.
    jump_key = next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(jump.address + " "))
    known = tmp_path / "known_hosts"
    known.write_text(lab.known_hosts.read_text() + "127.0.0.1 " + jump_key.split(" ", 1)[1] + "\n")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host behind-jump\n  HostName 127.0.0.1\n  ProxyJump root@{jump.address}\n")
    inventory = str(
        lab.write_inventory(
            tmp_path / "inv.yaml",
            hosts={"hidden": ["behind-jump"]},
            ssh={"known_hosts": str(known), "config_file": str(ssh_config)},
        )
    )
    tag = release(lab, "-i", inventory)
    home = {"HOME": str(tmp_path)}  # only the known_hosts written above
    ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "hidden", env=home))
    assert lab.http_get(jump, "/version")[1].strip() == "v1"
    assert lab.http_get(other, "/version")[0] == 0, "no other host was deployed to"
    status = json.loads(ok(deploy(lab, "-i", inventory, "status", "--hosts", "hidden", "--json", env=home)).stdout)
    assert [(row["host"], row["release"]) for row in status["hosts"]] == [("behind-jump", tag)]
