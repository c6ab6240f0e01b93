"""The end-to-end lab: a TLS registry and N SSH + Docker hosts on a private bridge network.

    lab = Lab.up(hosts=3)   # or Lab.load() for a lab that is already up
    lab.reset()             # fast per-test reset
    lab.down()
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container

from . import app, pki, proxy_image, wsapp
from .engine import ensure_engine
from .image import ensure_host_image, host_tag
from .inventory import default_inventory, merge, render

NETWORK = "deploy-lab"
SUBNET = "172.30.57.0/24"
GATEWAY = "172.30.57.1"
REGISTRY_IP = "172.30.57.2"
REGISTRY = f"{REGISTRY_IP}:5000"
REGISTRY_NAME = "registry.lab"
REGISTRY_USER = "deploy"
REGISTRY_CONTAINER = "deploy-lab-registry"
REGISTRY_VOLUME = "deploy-lab-registry-data"
REGISTRY_STORAGE = "/var/lib/docker-registry"
HOST_PREFIX = "deploy-lab-host"
MAX_HOSTS = 40  # addresses .11-.50 of SUBNET; each host costs about 100 MiB (sshd, dockerd, containerd)
LABEL = "deploy-lab"  # on every container and volume the lab makes
CERTS_D = Path("/etc/docker/certs.d")
DEFAULT_STATE_DIR = Path("/tmp/deploy-lab")
READY_TIMEOUT = 90.0
LOCK_TIMEOUT = 1800.0
COMMAND_TIMEOUT = 120.0  # for one docker command

# Every capability dockerd 20.10 knows (it predates PERFMON, BPF and CHECKPOINT_RESTORE) but
# SYS_RESOURCE, which cannot be granted here (so --privileged fails), and MAC_ADMIN and
# MAC_OVERRIDE, which no lab host needs. With the options in _start_host_container() this
# runs sshd and a nested dockerd.
CAPABILITIES = [
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "CHOWN", "DAC_OVERRIDE",
    "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT",
    "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_TIME",
    "SYS_TTY_CONFIG", "WAKE_ALARM",
]

_REGISTRY_CONFIG = f"""\
version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {REGISTRY_STORAGE}}}
  delete: {{enabled: true}}
http:
  addr: 0.0.0.0:5000
  tls: {{certificate: /lab/registry.crt, key: /lab/registry.key}}
auth:
  htpasswd: {{realm: deploy-lab, path: /lab/htpasswd}}
"""

T = TypeVar("T")


class LabNotUpError(FileNotFoundError):
    """Lab.load() found no lab.json."""


@dataclass(frozen=True)
class LabHost:
    """One lab host: `name` (host1), `address` (172.30.57.11), `container` (deploy-lab-host1)."""

    name: str
    address: str
    container: str


HostRef = LabHost | str  # a LabHost, or its name, address or container name


def state_dir() -> Path:
    """The lab's state directory: $DEPLOY_LAB_DIR or /tmp/deploy-lab."""
    return Path(os.environ.get("DEPLOY_LAB_DIR") or DEFAULT_STATE_DIR)


def lab_hosts(count: int) -> list[LabHost]:
    """The first `count` lab hosts: host1 at 172.30.57.11, ..."""
    return [LabHost(f"host{i}", f"172.30.57.{10 + i}", f"{HOST_PREFIX}{i}")
            for i in range(1, count + 1)]


def _parallel(func: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    """`func` over `items` in threads; re-raises the first error."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(func, items))


def _wait(what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _ssh_answers(address: str) -> bool:
    """Whether an SSH server sends its banner on address:22."""
    try:
        with socket.create_connection((address, 22), timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _container(client: docker.DockerClient, name: str) -> Container | None:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def _remove_app_images(client: docker.DockerClient) -> None:
    """Remove images of the outer engine that belong to the lab registry (test leftovers)."""
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{REGISTRY}/"):
                client.images.remove(tag, force=True)


def _clear_lab_objects(client: docker.DockerClient) -> None:
    """Remove the lab's containers, network, volumes and CA trust, in whatever state."""
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True, v=True)
    for network in client.networks.list(names=[NETWORK]):
        network.reload()
        for attached in network.containers:
            network.disconnect(attached, force=True)
        network.remove()
    for volume in client.volumes.list(filters={"label": LABEL}):
        volume.remove(force=True)
    _remove_app_images(client)
    shutil.rmtree(CERTS_D / REGISTRY, ignore_errors=True)


@contextmanager
def lab_lock(directory: Path | None = None, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the lab for one user (a pytest session, a CLI command) while the block runs.

    There is one lab per machine: a second user waits (up to `timeout`) instead of
    resetting or removing the lab under the first one's tests.
    """
    directory = directory or state_dir()
    path = directory.with_name(directory.name + ".lock")  # outside the state dir: down empties that
    path.touch()
    with path.open("r+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the lab is still in use by {holder}") from None
                print(f"waiting for the lab, in use by {holder}", file=sys.stderr, flush=True)
                time.sleep(5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({' '.join(sys.argv)})\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clear_state_files(directory: Path) -> None:
    """Empty the state dir, keeping the logs."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.suffix != ".log":
            entry.unlink()


def teardown(directory: Path | None = None) -> None:
    """Remove every trace of a lab (running or left over), keeping cached images and logs."""
    directory = directory or state_dir()
    client = ensure_engine(directory / "dockerd.log")
    try:
        _clear_lab_objects(client)
    finally:
        client.close()
    _clear_state_files(directory)


class Lab:
    """A running lab; make one with `Lab.up()` or `Lab.load()`."""

    def __init__(self, state_dir: Path, hosts: list[LabHost], image: str, initial_commit: str,
                 client: docker.DockerClient) -> None:
        self.state_dir = state_dir
        self.hosts = hosts
        self.image = image
        self.initial_commit = initial_commit
        self.registry = REGISTRY
        self.registry_user = REGISTRY_USER
        self.registry_password = self.password_file.read_text().strip()
        self.client = client

    # --- files in the state dir -------------------------------------------------------

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "ca.crt"

    @property
    def password_file(self) -> Path:
        return self.state_dir / "registry-password"

    @property
    def app_repo(self) -> Path:
        return self.state_dir / "app"

    @property
    def inventory_path(self) -> Path:
        return self.app_repo / "inventory.yaml"

    @property
    def ws_app_repo(self) -> Path:
        """The WebSocket sample app's repository (made by init_ws_app())."""
        return self.state_dir / "wsapp"

    @property
    def ws_inventory_path(self) -> Path:
        return self.ws_app_repo / "inventory.yaml"

    # --- life cycle -----------------------------------------------------------------

    @classmethod
    def up(cls, hosts: int = 3, *, at_least: bool = False) -> Lab:
        """Start a lab with `hosts` hosts, or reuse the running one if it matches.

        With `at_least`, a running lab with more hosts is reused too: the returned lab is its
        first `hosts` hosts, the others stay up, emptied so that they are idle (no container of
        an earlier run, with its HEALTHCHECK, takes CPU from the hosts in use), and a later,
        larger run needs no rebuild.
        """
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be between 1 and {MAX_HOSTS}, not {hosts}")
        directory = state_dir()
        directory.mkdir(parents=True, exist_ok=True)
        client = ensure_engine(directory / "dockerd.log")
        lab = cls._reusable(client, directory, hosts, at_least)
        if lab is not None:
            lab._refresh_app_repo()
            lab.hosts, spare = lab.hosts[:hosts], lab.hosts[hosts:]
            _parallel(lambda host: lab.host_exec(host, ["lab-host", "reset"]), spare)
            lab._repair()
            return lab
        _clear_lab_objects(client)
        _clear_state_files(directory)
        image = ensure_host_image(client, directory / "build.log")
        return cls._create(client, directory, lab_hosts(hosts), image)

    @classmethod
    def load(cls) -> Lab:
        """The lab described by lab.json (raises LabNotUpError when there is none)."""
        directory = state_dir()
        if not (directory / "lab.json").exists():
            raise LabNotUpError(f"no lab at {directory}; run: python -m tests.lab up")
        return cls._from_json(ensure_engine(directory / "dockerd.log"), directory)

    @classmethod
    def _from_json(cls, client: docker.DockerClient, directory: Path) -> Lab:
        data = json.loads((directory / "lab.json").read_text())
        return cls(directory, [LabHost(**h) for h in data["hosts"]], data["image"],
                   data["initial_commit"], client)

    @classmethod
    def _reusable(cls, client: docker.DockerClient, directory: Path, hosts: int,
                  at_least: bool) -> Lab | None:
        """The running lab if it has `hosts` hosts (or more, `at_least`) on the current image,
        else None."""
        try:
            lab = cls._from_json(client, directory)
        except (OSError, ValueError, KeyError):
            return None
        count = len(lab.hosts) >= hosts if at_least else len(lab.hosts) == hosts
        if not count or lab.image != host_tag() or not lab.ssh_key.exists():
            return None
        for name in [REGISTRY_CONTAINER, *(h.container for h in lab.hosts)]:
            container = _container(client, name)
            if container is None or container.status != "running":
                return None
        return lab

    @classmethod
    def _create(cls, client: docker.DockerClient, directory: Path, hosts: list[LabHost],
                image: str) -> Lab:
        _make_secrets(directory)
        client.networks.create(NETWORK, driver="bridge", labels={LABEL: "network"},
                               ipam=docker.types.IPAMConfig(pool_configs=[
                                   docker.types.IPAMPool(subnet=SUBNET, gateway=GATEWAY)]))
        public_key = (directory / "id_ed25519.pub").read_text().strip()
        with ThreadPoolExecutor(max_workers=len(hosts) + 1) as pool:
            registry = pool.submit(_start_registry_container, client, image, directory)
            host_keys = list(pool.map(
                lambda host: _start_host_container(client, image, host, public_key), hosts))
            registry.result()
        known = "".join(f"{h.address} {key}\n" for h, key in zip(hosts, host_keys, strict=True))
        (directory / "known_hosts.orig").write_text(known)
        (directory / "known_hosts").write_text(known)
        lab = cls(directory, hosts, image, "", client)
        lab.initial_commit = app.init_app_repo(lab.app_repo, lab.inventory_text(context="."))
        lab._save()
        return lab

    def _save(self) -> None:
        (self.state_dir / "lab.json").write_text(json.dumps({
            "hosts": [asdict(h) for h in self.hosts], "image": self.image,
            "registry": self.registry, "registry_user": self.registry_user,
            "network": NETWORK, "subnet": SUBNET, "initial_commit": self.initial_commit,
            "app_repo": str(self.app_repo), "ssh_key": str(self.ssh_key),
            "known_hosts": str(self.known_hosts), "ca_cert": str(self.ca_cert),
            "app_recipe": app.recipe(),
        }, indent=2) + "\n")

    def _refresh_app_repo(self) -> None:
        """Make the sample app's repository again if app.py changed since it was made."""
        if json.loads((self.state_dir / "lab.json").read_text()).get("app_recipe") != app.recipe():
            self.initial_commit = app.init_app_repo(self.app_repo, self.inventory_text(context="."))
            self._save()

    def down(self) -> None:
        """Remove the lab's containers, network, volumes and state files; keep cached images."""
        teardown(self.state_dir)
        self.close()

    def close(self) -> None:
        """Release the Docker client (the lab keeps running)."""
        self.client.close()

    def _repair(self) -> None:
        """Bring back what tests may have stopped or cut off: registry, network, sshd, dockerd."""
        self.start_registry()

        def repair(host: LabHost) -> None:
            self.connect(host)
            self.start_sshd(host)
            self.start_dockerd(host)

        _parallel(repair, self.hosts)

    def reset(self) -> None:
        """Fast per-test reset, without recreating hosts.

        Hosts: sshd and dockerd started, network reconnected, out of any Swarm (its services
        and secrets go with it), all containers, images, volumes and networks of the nested
        engine removed, /root/.deploy and /root/.docker removed. Registry: started and
        emptied. Outer engine: images of the lab registry removed. known_hosts restored; app
        repo back at its initial v1 commit; the WebSocket app's repository removed.
        """
        self.start_registry()
        _exec(REGISTRY_CONTAINER, ["rm", "-rf", f"{REGISTRY_STORAGE}/docker"])

        def reset_host(host: LabHost) -> None:
            self.connect(host)
            self.host_exec(host, ["lab-host", "reset"])
            if self._leave_swarm(host):  # the swarm may have restarted tasks meanwhile
                self.host_exec(host, ["lab-host", "reset"])
            _wait(f"sshd on {host.name}", lambda: _ssh_answers(host.address))

        _parallel(reset_host, self.hosts)
        _remove_app_images(self.client)
        shutil.copyfile(self.state_dir / "known_hosts.orig", self.known_hosts)
        app.reset_app_repo(self.app_repo, self.initial_commit)
        shutil.rmtree(self.ws_app_repo, ignore_errors=True)

    def status(self) -> dict[str, str]:
        """Container state (and sshd/dockerd state for hosts) by container name."""
        result = {}
        for name in [REGISTRY_CONTAINER, *(h.container for h in self.hosts)]:
            container = _container(self.client, name)
            result[name] = "missing" if container is None else container.status
        for host in self.hosts:
            if result[host.container] == "running":
                daemons = self.host_exec(host, ["sh", "-c",
                    "for d in sshd dockerd; do pgrep -x $d >/dev/null && echo $d:up || echo $d:down; done"])
                result[host.container] += " " + " ".join(daemons.stdout.split())
        return result

    # --- swarm ----------------------------------------------------------------------

    def swarm(self) -> None:
        """Make the hosts one Docker Swarm, the first host its manager (idempotent)."""
        manager, *workers = self.hosts
        if self._swarm_info(manager)[0] != "active":
            self.host_exec(manager, ["docker", "swarm", "init", "--advertise-addr", manager.address])
        token = self.host_exec(manager, ["docker", "swarm", "join-token", "-q", "worker"]).stdout.strip()

        def join(host: LabHost) -> None:
            state, managers = self._swarm_info(host)
            if state == "active" and f"{manager.address}:2377" in managers:
                return
            self._leave_swarm(host)
            self.host_exec(host, ["docker", "swarm", "join", "--token", token, f"{manager.address}:2377"])

        _parallel(join, workers)

        def all_ready() -> bool:
            nodes = self.host_exec(manager, ["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
            return sorted(nodes.stdout.split("\n")[:-1]) == sorted(f"{h.name} Ready" for h in self.hosts)

        _wait("every Swarm node ready", all_ready)

    def _swarm_info(self, host: LabHost) -> tuple[str, list[str]]:
        """The host's Swarm state (inactive, active...) and the manager addresses it knows."""
        info = self.host_exec(host, ["docker", "info", "--format",
                                     "{{.Swarm.LocalNodeState}}{{range .Swarm.RemoteManagers}} {{.Addr}}{{end}}"])
        state, *managers = info.stdout.split()
        return state, managers

    def _leave_swarm(self, host: LabHost) -> bool:
        """Take the host out of its Swarm, if it is in one; say whether it was."""
        if self._swarm_info(host)[0] == "inactive":
            return False
        self.host_exec(host, ["docker", "swarm", "leave", "--force"])
        return True

    # --- hosts ----------------------------------------------------------------------

    def host(self, ref: HostRef) -> LabHost:
        """The LabHost for a LabHost, host name, address or container name."""
        if isinstance(ref, LabHost):
            return ref
        for host in self.hosts:
            if ref in (host.name, host.address, host.container):
                return host
        raise KeyError(f"no lab host {ref!r}")

    def host_exec(self, host: HostRef, argv: list[str], input: bytes | None = None,
                  check: bool = True, timeout: float = COMMAND_TIMEOUT,
                  ) -> subprocess.CompletedProcess[str]:
        """Run argv in a host container with `docker exec` (stdout and stderr as text): for
        assertions and fault injection only, the code under test must go through SSH."""
        return _exec(self.host(host).container, argv, input, check, timeout)

    def http_get(self, host: HostRef, path: str, port: int = 8080,
                 timeout: float = 3) -> tuple[int, str]:
        """GET http://<host>:<port><path>: (status, body), or (0, "") when nothing answers."""
        url = f"http://{self.host(host).address}:{port}{path}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except (OSError, urllib.error.URLError):
            return 0, ""

    def stop_sshd(self, host: HostRef) -> None:
        """Stop the SSH daemon: new connections are refused, open sessions go on."""
        self.host_exec(host, ["lab-host", "stop-sshd"])

    def sshd_log(self, host: HostRef) -> list[str]:
        """The host's sshd log since the last reset (LogLevel VERBOSE): an ``Accepted publickey``
        line per connection, a ``Starting session`` line per command."""
        return self.host_exec(host, ["cat", "/var/log/sshd.log"]).stdout.splitlines()

    def start_sshd(self, host: HostRef) -> None:
        """Start the SSH daemon if it is not running and wait until it answers."""
        target = self.host(host)
        self.host_exec(target, ["lab-host", "start-sshd"])
        _wait(f"sshd on {target.name}", lambda: _ssh_answers(target.address))

    def stop_dockerd(self, host: HostRef) -> None:
        """Stop the host's Docker engine (its containers stop with it)."""
        self.host_exec(host, ["lab-host", "stop-dockerd"])

    def start_dockerd(self, host: HostRef) -> None:
        """Start the host's Docker engine if it is not running and wait until it answers."""
        self.host_exec(host, ["lab-host", "start-dockerd"])

    def disconnect(self, host: HostRef) -> None:
        """Cut a host off the lab network."""
        target = self.host(host)
        if self._attached(target):
            self.client.networks.get(NETWORK).disconnect(target.container)

    def connect(self, host: HostRef) -> None:
        """Put a host back on the lab network, at its address (no-op when attached)."""
        target = self.host(host)
        if not self._attached(target):
            self.client.networks.get(NETWORK).connect(target.container,
                                                      ipv4_address=target.address)

    def _attached(self, host: LabHost) -> bool:
        container = self.client.containers.get(host.container)
        return NETWORK in container.attrs["NetworkSettings"]["Networks"]

    # --- registry -------------------------------------------------------------------

    def stop_registry(self) -> None:
        """Stop the registry server; its address stays up, so clients get "connection
        refused" at once, and its storage stays."""
        _exec(REGISTRY_CONTAINER, ["lab-host", "stop-registry"])

    def start_registry(self) -> None:
        """Start the registry (and its container) if stopped; wait until it answers."""
        container = self.client.containers.get(REGISTRY_CONTAINER)
        if container.status == "running":
            _exec(REGISTRY_CONTAINER, ["lab-host", "start-registry"])
        else:
            container.start()
        _wait_registry(self.ca_cert)

    # --- sample app and inventory ---------------------------------------------------

    def commit_app(self, version: str, mode: str = "ok", slow_seconds: int = 8) -> str:
        """Commit a new app version ("ok", "unhealthy", "crash" or "slow"); return its sha."""
        return app.commit_app(self.app_repo, version, mode, slow_seconds)

    def inventory(self, hosts: Sequence[HostRef] | dict[str, Any] | None = None,
                  context: str | None = None) -> dict[str, Any]:
        """The default inventory as a dict; `hosts` is a list for group `lab`, or all groups
        (a group's value: its host addresses, or a Swarm cluster like `{"swarm": {...}}`)."""
        if isinstance(hosts, dict):
            groups = hosts
        else:
            groups = {"lab": [self.host(h).address for h in (hosts or self.hosts)]}
        return default_inventory(
            registry=self.registry, username=self.registry_user,
            context=context or str(self.app_repo), identity_file=str(self.ssh_key),
            known_hosts=str(self.known_hosts), groups=groups)

    def inventory_text(self, hosts: Sequence[HostRef] | dict[str, Any] | None = None,
                       context: str | None = None, **overrides: dict[str, Any]) -> str:
        """Inventory YAML; `overrides` are top-level sections merged in (`app={...}`)."""
        return render(merge(self.inventory(hosts, context), overrides))

    def write_inventory(self, path: Path | str,
                        hosts: Sequence[HostRef] | dict[str, Any] | None = None,
                        app_overrides: dict[str, Any] | None = None,
                        **overrides: dict[str, Any]) -> Path:
        """Write an inventory variant (build context: the app repo's absolute path)."""
        if app_overrides:
            overrides["app"] = merge(overrides.get("app", {}), app_overrides)
        path = Path(path)
        path.write_text(render(merge(self.inventory(hosts), overrides)))
        return path

    # --- WebSocket sample app, proxy image, certificates ------------------------------

    def ws_inventory(self, hosts: Sequence[HostRef] | dict[str, Any] | None = None,
                     context: str | None = None) -> dict[str, Any]:
        """The WebSocket app's inventory as a dict: app `chat`, image REGISTRY/acme/chat,
        port 8080 published as 8081, health on /health; `hosts` as for inventory()."""
        inventory = self.inventory(hosts, context or str(self.ws_app_repo))
        inventory["app"].update(name="chat", image=f"{self.registry}/acme/chat",
                                container={"ports": ["8081:8080"], "init": True})
        return inventory

    def write_ws_inventory(self, path: Path | str,
                           hosts: Sequence[HostRef] | dict[str, Any] | None = None,
                           app_overrides: dict[str, Any] | None = None,
                           **overrides: dict[str, Any]) -> Path:
        """Write a WebSocket app inventory variant (build context: its repository)."""
        if app_overrides:
            overrides["app"] = merge(overrides.get("app", {}), app_overrides)
        path = Path(path)
        path.write_text(render(merge(self.ws_inventory(hosts), overrides)))
        return path

    def init_ws_app(self) -> str:
        """(Re)create the WebSocket app's repository at v1 (mode ok), with its inventory
        (build context ".", every host) in it; return the commit sha. The first call on a
        new host image collects the app's run time (a few seconds); later calls copy it."""
        runtime = wsapp.build_runtime(self.client, self.image, self.state_dir)
        return wsapp.init_ws_repo(self.ws_app_repo, render(self.ws_inventory(context=".")), runtime)

    def commit_ws_app(self, version: str, mode: str = "ok", slow_seconds: int = 8) -> str:
        """Commit a new WebSocket app version ("ok", "unhealthy", "slow" or
        "ignore-sigterm"); return its sha."""
        return wsapp.commit_ws_app(self.ws_app_repo, version, mode, slow_seconds)

    def proxy_image(self) -> str:
        """The Caddy image in the lab registry (built and pushed when missing): its reference."""
        return proxy_image.ensure_proxy_image(self)

    def server_cert(self, directory: Path | str, names: Sequence[str],
                    ips: Sequence[str] = ()) -> tuple[Path, Path]:
        """A TLS server certificate for `names` (and `ips`) signed by the lab CA (ca_cert):
        (cert, key) written to `directory` as <first name>.crt and .key."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{names[0]}.crt", directory / f"{names[0]}.key"
        pki.make_server_cert(cert, key, self.ca_cert, self.state_dir / "ca.key", list(ips), list(names))
        key.chmod(0o600)
        return cert, key

    def env(self) -> dict[str, str]:
        """Environment for `deploy`: the registry password and the inventory path."""
        return {"DEPLOY_REGISTRY_PASSWORD": self.registry_password,
                "DEPLOY_INVENTORY": str(self.inventory_path)}


class DockerCLIError(subprocess.CalledProcessError):
    """A failed `docker` command; its message includes the command's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


def _docker(args: list[str], input: bytes | None = None, check: bool = True,
            timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI with stdout and stderr decoded."""
    proc = subprocess.run(["docker", *args], input=input, capture_output=True, timeout=timeout)
    result = subprocess.CompletedProcess(proc.args, proc.returncode,
                                         proc.stdout.decode(errors="replace"),
                                         proc.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise DockerCLIError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def _exec(container: str, argv: list[str], input: bytes | None = None, check: bool = True,
          timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return _docker(["exec", "-i", container, *argv], input, check, timeout)


def _make_secrets(directory: Path) -> None:
    """Client key, CA, registry certificate, password, htpasswd and registry config."""
    pki.make_ssh_key(directory / "id_ed25519")
    ca_key = directory / "ca.key"
    pki.make_ca(directory / "ca.crt", ca_key)
    ca_key.chmod(0o600)
    registry_dir = directory / "registry"
    registry_dir.mkdir()
    pki.make_server_cert(registry_dir / "registry.crt", registry_dir / "registry.key",
                         directory / "ca.crt", ca_key, [REGISTRY_IP], [REGISTRY_NAME])
    password = secrets.token_urlsafe(24)
    password_file = directory / "registry-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    pki.make_htpasswd(registry_dir / "htpasswd", REGISTRY_USER, password)
    (registry_dir / "config.yml").write_text(_REGISTRY_CONFIG)
    trust = CERTS_D / REGISTRY
    trust.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(directory / "ca.crt", trust / "ca.crt")


def _docker_run(name: str, label: str, address: str, image: str, options: list[str],
                command: Sequence[str] = ()) -> None:
    """`docker run -d` a lab container on the lab network at `address`."""
    _docker(["run", "-d", "--name", name, "--label", f"{LABEL}={label}", "--network", NETWORK,
             "--ip", address, "--init", *options, image, *command])


def _start_registry_container(client: docker.DockerClient, image: str, directory: Path) -> None:
    client.volumes.create(REGISTRY_VOLUME, labels={LABEL: "registry"})
    _docker_run(REGISTRY_CONTAINER, "registry", REGISTRY_IP, image, [
        "--hostname", "registry", "--network-alias", REGISTRY_NAME,
        "-v", f"{directory / 'registry'}:/lab:ro",
        "-v", f"{REGISTRY_VOLUME}:{REGISTRY_STORAGE}", "--tmpfs", "/run",
        "--entrypoint", "/usr/local/sbin/lab-host",
    ], ["registry"])
    _wait_registry(directory / "ca.crt")


def _wait_registry(ca_cert: Path) -> None:
    """Wait until the registry answers /v2/ over TLS (401: it wants credentials)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))

    def answers() -> bool:
        try:
            opener.open(f"https://{REGISTRY}/v2/", timeout=2).close()
        except urllib.error.HTTPError as err:
            return err.code == 401
        except OSError:
            return False
        return True

    _wait("the registry", answers)


def _start_host_container(client: docker.DockerClient, image: str, host: LabHost,
                          public_key: str) -> str:
    """Start a host container, wait for sshd and its dockerd; return its ed25519 host key."""
    volume = f"{host.container}-docker"
    client.volumes.create(volume, labels={LABEL: host.name})
    _docker_run(host.container, host.name, host.address, image, [
        "--hostname", host.name,
        *(arg for cap in CAPABILITIES for arg in ("--cap-add", cap)),
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
        "-v", f"{volume}:/var/lib/docker", "-v", f"{CERTS_D}:{CERTS_D}:ro",
        "-e", f"LAB_AUTHORIZED_KEY={public_key}",
    ])
    container = client.containers.get(host.container)

    def ready() -> bool:
        container.reload()
        if container.status != "running":
            raise RuntimeError(f"{host.container} stopped:\n{container.logs().decode()}")
        return b"lab-host: ready" in container.logs()

    _wait(f"{host.container} to start", ready)
    _wait(f"sshd on {host.address}", lambda: _ssh_answers(host.address))
    exit_code, output = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
    if exit_code != 0:
        raise RuntimeError(f"no host key on {host.container}: {output.decode()}")
    return " ".join(output.decode().split()[:2])
