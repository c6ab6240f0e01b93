"""The ways to roll a release out to the lab hosts: one function per contender.

Each contender takes a :class:`Fleet` and a release tag, leaves every host of the fleet
serving that release with /health answering, and raises :class:`ContenderFailed` otherwise.
All of them run the same container (name aside): `--init`, `--restart unless-stopped`,
port 8080 published, volume `web-data:/data`, and wait for /health every 0.2 s. The one
exception is `deploy (proxy)`: the same rollout with the app behind each host's reverse proxy
(`app.proxy`), which publishes no port and switches start-first; its proxy is booted before
the timed part (:attr:`Contender.boot`), so the timing compares switch strategies.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.support import deploy
from tests.lab import Lab, LabHost

from .traffic import PROXY_NAME

GROUP = "lab"
CONTAINER = "web"
RUN_OPTIONS = "--init --restart unless-stopped -p 8080:8080 -v web-data:/data"
HEALTH_URL = "http://127.0.0.1:8080/health"
HEALTH_INTERVAL = 0.2
HEALTH_TRIES = 100
TIMEOUT = 300.0

#: what `deploy` is given on top of the lab's default inventory (tests/lab/inventory.py)
DEPLOY_OVERRIDES: dict[str, object] = {"rollout": {"batch_size": "100%"}}
#: seconds the old release keeps its requests in flight behind the proxy (the default is 30)
PROXY_DRAIN_TIMEOUT = 2


def proxy_overrides(proxy_image: str) -> dict[str, object]:
    """What `deploy (proxy)` is given on top of that: no published port, the app behind the proxy."""
    return {**DEPLOY_OVERRIDES, "container": {"ports": []},
            "proxy": {"hosts": [PROXY_NAME], "app_port": 8080, "image": proxy_image,
                      "drain_timeout": PROXY_DRAIN_TIMEOUT}}


class ContenderFailed(RuntimeError):
    """A contender did not finish its rollout; the message carries its output."""


@dataclass(frozen=True)
class Fleet:
    """The lab hosts of one measurement, and a scratch directory for the contenders' files."""

    lab: Lab
    hosts: tuple[LabHost, ...]
    workdir: Path

    @property
    def image(self) -> str:
        """The app's repository in the lab registry, without a tag."""
        return str(self.lab.inventory()["app"]["image"])

    @property
    def inventory(self) -> Path:
        """The `deploy` inventory for these hosts (written by :func:`prepare`)."""
        return self.workdir / "inventory.yaml"

    @property
    def proxy_inventory(self) -> Path:
        """The same with the app behind the proxy (written by :func:`prepare_proxy`)."""
        return self.workdir / "inventory-proxy.yaml"

    def env(self) -> dict[str, str]:
        """The environment of every contender: the lab's, which carries the registry password."""
        return {**os.environ, **self.lab.env(), "NO_COLOR": "1"}


def _nothing(fleet: Fleet) -> None:
    pass


@dataclass(frozen=True)
class Contender:
    """A named way to roll out; what to do on emptied hosts before the timed runs (`boot`) and
    what to undo after a run (`cleanup`), both outside the timed region; whether the app is
    reached through the proxy (`proxied`)."""

    name: str
    label: str
    run: Callable[[Fleet, str], None]
    cleanup: Callable[[Fleet], None] = field(default=_nothing)
    boot: Callable[[Fleet], None] = field(default=_nothing)
    proxied: bool = False


def prepare(fleet: Fleet) -> None:
    """Write the fleet's `deploy` inventory: the lab's default one, all hosts in one batch."""
    fleet.workdir.mkdir(parents=True, exist_ok=True)
    fleet.lab.write_inventory(fleet.inventory, hosts=list(fleet.hosts), app_overrides=DEPLOY_OVERRIDES)


def prepare_proxy(fleet: Fleet, proxy_image: str) -> None:
    """Write the fleet's `deploy (proxy)` inventory: the same, with the app behind the proxy."""
    fleet.workdir.mkdir(parents=True, exist_ok=True)
    fleet.lab.write_inventory(fleet.proxy_inventory, hosts=list(fleet.hosts),
                              app_overrides=proxy_overrides(proxy_image))


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise ContenderFailed(f"{what} exited {done.returncode}:\n{done.stdout}{done.stderr}")


# ---------------------------------------------------------------- deploy


def _deploy(fleet: Fleet, inventory: Path, *args: str) -> None:
    result = deploy(fleet.lab, "-i", str(inventory), *args, "--hosts", GROUP, timeout=TIMEOUT)
    if result.code != 0:
        raise ContenderFailed(f"deploy {args[0]} exited {result.code}:\n{result.output}")


def deploy_rollout(fleet: Fleet, tag: str) -> None:
    """`deploy -i INVENTORY rollout --hosts lab --tag TAG`."""
    _deploy(fleet, fleet.inventory, "rollout", "--tag", tag)


def deploy_rollback(fleet: Fleet, tag: str) -> None:
    """`deploy -i INVENTORY rollback --hosts lab`: back to the previous release (`tag`)."""
    _deploy(fleet, fleet.inventory, "rollback")


def deploy_status(fleet: Fleet, tag: str) -> None:
    """`deploy -i INVENTORY status --hosts lab`: every host's release, digest and health (`tag`
    is what they serve)."""
    _deploy(fleet, fleet.inventory, "status")


def deploy_proxy_rollout(fleet: Fleet, tag: str) -> None:
    """`deploy rollout` with the proxy inventory: start-first switches behind the proxy."""
    _deploy(fleet, fleet.proxy_inventory, "rollout", "--tag", tag)


def deploy_proxy_rollback(fleet: Fleet, tag: str) -> None:
    """`deploy rollback` with the proxy inventory."""
    _deploy(fleet, fleet.proxy_inventory, "rollback")


def boot_proxy(fleet: Fleet) -> None:
    """`deploy proxy boot --hosts lab`: the proxy running on every host, before the timed runs."""
    _deploy(fleet, fleet.proxy_inventory, "proxy", "boot")


# ---------------------------------------------------------------- shell loops over OpenSSH


def ssh_options(lab: Lab) -> list[str]:
    """OpenSSH client options: the lab key, the lab's known_hosts only, unknown keys refused."""
    return ["-F", "none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-i", str(lab.ssh_key), "-l", "root"]


def remote_script(fleet: Fleet, tag: str) -> str:
    """What each host runs: log in (password on stdin), pull, replace the container, wait for /health."""
    lab, image = fleet.lab, shlex.quote(f"{fleet.image}:{tag}")
    return " && ".join([
        f"docker login --username {shlex.quote(lab.registry_user)} --password-stdin "
        f"{shlex.quote(lab.registry)} >/dev/null",
        f"docker pull -q {image} >/dev/null",
        f"{{ docker rm -f {CONTAINER} >/dev/null 2>&1 || true; }}",
        f"docker run -d --name {CONTAINER} {RUN_OPTIONS} {image} >/dev/null",
        f"i=0 && until curl -fsS -o /dev/null --max-time 2 {HEALTH_URL}; do "
        f'i=$((i+1)); [ "$i" -lt {HEALTH_TRIES} ] || exit 1; sleep {HEALTH_INTERVAL}; done',
    ])


def per_host(addresses: str, command: str, *, parallel: bool) -> str:
    """Bash that runs *command* once per host of *addresses* (as ``$host``), in turn (stopping
    at the first failure) or all at once (failing if any failed)."""
    if parallel:
        body = f"""\
            pids=()
            for host in {addresses}; do
              {command} &
              pids+=("$!")
            done
            rc=0
            for pid in "${{pids[@]}}"; do wait "$pid" || rc=1; done
            exit "$rc"
            """
    else:
        body = f"""\
            for host in {addresses}; do
              {command} || exit 1
            done
            """
    return textwrap.dedent(body)


def loop_script(fleet: Fleet, tag: str, *, parallel: bool) -> str:
    """The local bash loop: one `ssh HOST SCRIPT <<<password` per host, in turn or all at once."""
    hosts = " ".join(host.address for host in fleet.hosts)
    ssh = f"ssh {shlex.join(ssh_options(fleet.lab))} \"$host\" \"$remote\" <<<\"$DEPLOY_REGISTRY_PASSWORD\""
    return f"set -u\nremote={shlex.quote(remote_script(fleet, tag))}\n" + per_host(hosts, ssh, parallel=parallel)


def _ssh_loop(fleet: Fleet, tag: str, *, parallel: bool) -> None:
    done = subprocess.run(["bash", "-c", loop_script(fleet, tag, parallel=parallel)], env=fleet.env(),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    _check(done, f"the {'parallel' if parallel else 'sequential'} ssh loop")


def ssh_loop_sequential(fleet: Fleet, tag: str) -> None:
    """`for host in ...; do ssh host '...'; done`."""
    _ssh_loop(fleet, tag, parallel=False)


def ssh_loop_parallel(fleet: Fleet, tag: str) -> None:
    """The same loop with one background ssh per host, then `wait`."""
    _ssh_loop(fleet, tag, parallel=True)


# ---------------------------------------------------------------- Ansible

ANSIBLE_CFG = """\
[defaults]
inventory = {dir}/hosts.ini
forks = {forks}
host_key_checking = True
gathering = explicit
interpreter_python = /usr/bin/python3
retry_files_enabled = False
nocolor = True
local_tmp = {dir}/tmp

[ssh_connection]
pipelining = True
ssh_args = -F none -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes
control_path_dir = {dir}/cp
"""

PLAYBOOK = f"""\
- name: Roll out the web app
  hosts: {GROUP}
  gather_facts: false
  vars:
    reference: "{{{{ image }}}}:{{{{ tag }}}}"
  tasks:
    - name: Log in to the registry
      community.docker.docker_login:
        registry_url: "{{{{ registry }}}}"
        username: "{{{{ registry_user }}}}"
        password: "{{{{ lookup('ansible.builtin.env', 'DEPLOY_REGISTRY_PASSWORD') }}}}"
      no_log: true
    - name: Pull the release
      community.docker.docker_image:
        name: "{{{{ reference }}}}"
        source: pull
    - name: Replace the container
      community.docker.docker_container:
        name: {CONTAINER}
        image: "{{{{ reference }}}}"
        state: started
        init: true
        restart_policy: unless-stopped
        published_ports: ["8080:8080"]
        volumes: ["web-data:/data"]
    - name: Wait for /health
      ansible.builtin.uri:
        url: {HEALTH_URL}
      register: health
      until: health.status == 200
      retries: {HEALTH_TRIES}
      delay: {HEALTH_INTERVAL}
"""


def _ansible_dir(fleet: Fleet) -> Path:
    return fleet.workdir / "ansible"


def write_ansible_files(fleet: Fleet) -> Path:
    """ansible.cfg (forks = hosts, pipelining, ControlPersist, host keys checked), inventory, playbook."""
    directory = _ansible_dir(fleet)
    for sub in ("tmp", "cp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    lab = fleet.lab
    (directory / "ansible.cfg").write_text(ANSIBLE_CFG.format(
        dir=directory, forks=len(fleet.hosts), known_hosts=lab.known_hosts))
    (directory / "hosts.ini").write_text(
        f"[{GROUP}]\n" + "".join(f"{host.address}\n" for host in fleet.hosts)
        + f"\n[{GROUP}:vars]\nansible_user=root\nansible_ssh_private_key_file={lab.ssh_key}\n")
    (directory / "playbook.yml").write_text(PLAYBOOK)
    return directory


def ansible_playbook(fleet: Fleet, tag: str) -> None:
    """`ansible-playbook playbook.yml` with community.docker modules and a `uri` health wait."""
    directory = write_ansible_files(fleet)
    extra = json.dumps({"image": fleet.image, "tag": tag, "registry": fleet.lab.registry,
                        "registry_user": fleet.lab.registry_user})
    done = subprocess.run(
        ["ansible-playbook", "--extra-vars", extra, str(directory / "playbook.yml")],
        env={**fleet.env(), "ANSIBLE_CONFIG": str(directory / "ansible.cfg")},
        capture_output=True, text=True, timeout=TIMEOUT, check=False)
    _check(done, "ansible-playbook")


def close_ansible_masters(fleet: Fleet) -> None:
    """Ask each ControlPersist master ssh to exit, so the next run starts without connections."""
    control_dir = _ansible_dir(fleet) / "cp"
    if not control_dir.is_dir():
        return
    for socket in control_dir.iterdir():
        subprocess.run(["ssh", "-F", "none", "-o", f"ControlPath={socket}", "-O", "exit", "unused"],
                       capture_output=True, timeout=30, check=False)
        socket.unlink(missing_ok=True)


CONTENDERS: dict[str, Contender] = {
    contender.name: contender
    for contender in (
        Contender("deploy", "deploy rollout", deploy_rollout),
        Contender("deploy-proxy", "deploy (proxy)", deploy_proxy_rollout, boot=boot_proxy, proxied=True),
        Contender("loop-par", "parallel ssh loop", ssh_loop_parallel),
        Contender("loop-seq", "sequential ssh loop", ssh_loop_sequential),
        Contender("ansible", "Ansible playbook", ansible_playbook, close_ansible_masters),
    )
}
ROLLBACK = Contender("deploy-rollback", "deploy rollback", deploy_rollback)
PROXY_ROLLBACK = Contender("deploy-proxy-rollback", "deploy (proxy) rollback", deploy_proxy_rollback,
                           proxied=True)
#: the rollback measured after each `deploy` contender's rollouts
ROLLBACKS = {"deploy": ROLLBACK, "deploy-proxy": PROXY_ROLLBACK}
#: `deploy status`, measured after plain deploy's warm rollout
STATUS = Contender("deploy-status", "deploy status", deploy_status)
