"""`app.registry: false`: the inventory, this machine's registry, the commands and the forward."""

from __future__ import annotations

import http.server
import io
import os
import shutil
import socket
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployer import cli, commands, config, local_registry, plan, registry
from deployer.errors import ConfigError, RegistryError
from deployer.images import load_local
from deployer.output import Output
from deployer.plan import Release
from deployer.state import Container, HostState
from deployer.targets.plain import PlainHosts

from .fakehost import FakeHost
from .test_plain import _run

DIGEST = "sha256:" + "ab" * 32
SERVED = Release("acme/web", "v1", DIGEST, served_by=5123)


def _inventory(app: str = "  registry: false\n", hosts: str = "hosts: {prod: [h1, h2, h3]}\n") -> config.Inventory:
    return config.parse(
        "app:\n  name: web\n  image: acme/web\n" + app
        + "  healthcheck: {path: /health, port: 8080, timeout: 0.3, interval: 0.01}\n"
        "  keep_releases: 1\n" + hosts
    )


# ---------------------------------------------------------------- the inventory


def test_registry_false_means_no_registry_and_no_password() -> None:
    inventory = _inventory()
    assert inventory.app.no_registry and inventory.app.registry_settings is None
    assert config.registry_password(inventory, {}) is None


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("registry.example.com:5000/acme/web", "names a registry, but registry is false"),
        ("localhost/web", "names a registry, but registry is false"),
        ("docker.io/acme/web", "names Docker Hub, but registry is false: drop the docker.io/ prefix"),
    ],
)
def test_registry_false_wants_a_plain_repository_name(image: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(f"app:\n  name: web\n  image: {image}\n  registry: false\nhosts: {{p: [h]}}\n")


def test_registry_false_refuses_a_swarm_group() -> None:
    with pytest.raises(ConfigError) as caught:
        _inventory(hosts="hosts:\n  prod: [h1]\n  cluster: {swarm: {manager: m1}}\n")
    assert "app.registry: false cannot serve the Swarm cluster of group 'cluster'" in caught.value.message
    assert "give the app a registry (app.registry.server)" in caught.value.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "app.registry: a registry is a mapping with server (and username, password_env), or false for none"),
        ("{usrname: x}", "app.registry.usrname: unknown key (did you mean 'username'?)"),
    ],
)
def test_a_registry_that_is_neither_a_mapping_nor_false_gets_one_message(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(f"app:\n  name: web\n  image: acme/web\n  registry: {value}\nhosts: {{p: [h]}}\n")
    assert message in caught.value.message


# ---------------------------------------------------------------- this machine's registry


def test_the_registry_config_binds_loopback_plain_http_and_keeps_images_in_the_cache() -> None:
    assert local_registry.config(Path("/home/me/.cache/deploy/registry/web"), 41234, "s3cret", writable=False) == (
        "version: 0.1\n"
        "log:\n"
        "  level: error\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        "  filesystem:\n"
        "    rootdirectory: /home/me/.cache/deploy/registry/web\n"
        "  maintenance:\n"
        "    uploadpurging:\n"
        "      enabled: false\n"
        "    readonly:\n"
        "      enabled: true\n"
        "http:\n"
        "  addr: 127.0.0.1:41234\n"
        "  secret: s3cret\n"
        "health:\n"
        "  storagedriver:\n"
        "    enabled: false\n"
    )


def test_the_registry_reads_its_config_from_stdin() -> None:
    assert local_registry.command("/usr/bin/docker-registry") == ["/usr/bin/docker-registry", "serve", "/dev/stdin"]


def test_the_cache_follows_xdg_cache_home() -> None:
    assert local_registry.cache_dir("web", {"XDG_CACHE_HOME": "/var/cache/me"}) == Path(
        "/var/cache/me/deploy/registry/web"
    )
    for environ in ({}, {"XDG_CACHE_HOME": "relative/ignored"}):
        assert local_registry.cache_dir("web", environ) == Path.home() / ".cache/deploy/registry/web"


def test_a_missing_registry_program_names_what_to_install() -> None:
    assert local_registry.find_binary(lambda name: "/opt/registry" if name == "registry" else None) == "/opt/registry"
    with pytest.raises(RegistryError) as caught:
        local_registry.find_binary(lambda name: None)
    assert "neither docker-registry nor registry is on PATH" in caught.value.message
    assert caught.value.hint is not None and "apt-get install docker-registry" in caught.value.hint


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-registry"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_registry_that_exits_at_once_is_an_error_with_its_last_words(tmp_path: Path) -> None:
    binary = _script(tmp_path, "cat >/dev/null; echo 'configuration error: bad storage' >&2; exit 1\n")
    with (
        pytest.raises(RegistryError, match=r"the local registry exited at once \(status 1\): configuration error: bad storage"),
        local_registry.serve("web", binary=binary, environ={"XDG_CACHE_HOME": str(tmp_path)}),
    ):
        pass


def test_a_registry_that_never_answers_is_stopped_at_its_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    binary = _script(tmp_path, f"echo $$ > {pid_file}; exec sleep 60\n")
    with (
        pytest.raises(RegistryError, match=r"did not answer on 127\.0\.0\.1:\d+ within 0\.3 s"),
        local_registry.serve("web", binary=binary, environ={"XDG_CACHE_HOME": str(tmp_path)}, ready_timeout=0.3),
    ):
        pass
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists(), "stopped, and reaped"


REAL = shutil.which("docker-registry") or shutil.which("registry")


@pytest.mark.skipif(REAL is None, reason="no registry program (tests/lab/install.sh installs it)")
def test_the_registry_runs_for_the_block_only_and_writes_no_file(tmp_path: Path) -> None:
    before = set(Path("/tmp").iterdir())
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    with local_registry.serve("web", environ=environ) as served:
        assert served.storage == tmp_path / "cache/deploy/registry/web"
        assert registry.local_digest(served.address, "acme/web", "v1") is None
        pids = subprocess.run(["pgrep", "-f", f"{REAL} serve /dev/stdin"], capture_output=True, text=True).stdout
        assert pids.strip()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", served.port)) != 0, "stopped"
    assert {p for p in set(Path("/tmp").iterdir()) - before if "fake" not in p.name and os.stat(p).st_uid == os.getuid()
            and p.is_file() and str(tmp_path).encode() in p.read_bytes()} == set()


def _start_upload(address: str) -> int:
    request = urllib.request.Request(f"http://{address}/v2/acme/web/blobs/uploads/", method="POST")
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        refused.close()
        return refused.code


@pytest.mark.skipif(REAL is None, reason="no registry program (tests/lab/install.sh installs it)")
def test_what_hosts_reach_refuses_pushes_only_build_writes(tmp_path: Path) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path)}
    with local_registry.serve("web", environ=environ) as served:
        assert _start_upload(served.address) == 405
    with local_registry.serve("web", environ=environ, writable=True) as served:
        assert _start_upload(served.address) == 202


class _Digests(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        if self.path == "/v2/acme/web/manifests/v1":
            self.send_response(200)
            self.send_header("Docker-Content-Digest", DIGEST)
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def digests() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Digests)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_release_digest_comes_from_the_local_registry_over_plain_http(
    digests: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://192.0.2.1:9")  # never used for loopback
    assert registry.local_digest(digests, "acme/web", "v1") == DIGEST
    assert registry.local_digest(digests, "acme/web", "v2") is None


# ---------------------------------------------------------------- build and push


class _Engine:
    """The engine calls load_local makes, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.api = self

    def inspect_image(self, reference: str) -> dict[str, Any]:
        self.calls.append(("inspect", reference))
        return {"Id": "sha256:1"}

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.calls.append(("tag", image, f"{repository}:{tag}"))

    def push(self, repository: str, tag: str, **kwargs: object) -> list[dict[str, Any]]:
        self.calls.append(("push", f"{repository}:{tag}"))
        return [{"status": "Pushed", "id": "layer1"}, {"aux": {"Tag": tag, "Digest": DIGEST}}]

    def remove_image(self, name: str, noprune: bool) -> None:
        self.calls.append(("remove", name))


def test_build_puts_the_image_into_the_local_registry_and_the_engine_keeps_only_its_own_name(digests: str) -> None:
    engine = _Engine()
    out = Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO())
    loaded = load_local(_inventory(), "v2", digests, out=out, client=engine)  # type: ignore[arg-type]
    assert loaded.digest == DIGEST
    assert engine.calls == [
        ("inspect", "acme/web:v2"),
        ("tag", "acme/web:v2", f"{digests}/acme/web:v2"),
        ("push", f"{digests}/acme/web:v2"),
        ("remove", f"{digests}/acme/web:v2"),
        ("remove", f"{digests}/acme/web@{DIGEST}"),
    ]


def test_push_says_it_is_not_needed_and_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("app: {name: web, image: acme/web, registry: false}\nhosts: {prod: [h1]}\n")
    result = CliRunner().invoke(cli.app, ["-i", str(path), "push"])
    assert result.exit_code == 0, result.output
    assert "app.registry is false: there is no registry to push to, and nothing to do" in result.output


# ---------------------------------------------------------------- what hosts run


def test_a_host_pulls_through_the_forward_then_keeps_only_the_usual_name() -> None:
    assert commands.pull_forwarded("127.0.0.1:40001", "acme/web", DIGEST, "acme/web:v1") == commands.RemoteCommand(
        (
            "sh", "-c",
            'r="$1/$2@$3"; f=$(mktemp) || exit 1; '
            '{ docker pull "$r"; echo $? > "$f"; } | { cat; cat >/dev/null; }; '
            's=$(cat "$f"); rm -f "$f"; [ "$s" = 0 ] || exit 1; '
            'docker image tag "$r" "$4"; s=$?; docker image rm "$r" >/dev/null; exit $s',
            "sh", "127.0.0.1:40001", "acme/web", DIGEST, "acme/web:v1",
        ),
        purpose="docker pull",
        slow=True,
        interruptible=True,
    )  # fmt: skip


def test_a_served_release_is_pulled_from_the_forward_and_run_by_its_tag() -> None:
    assert SERVED.reference == "acme/web:v1"
    assert Release("acme/web", "v1", DIGEST).reference == f"acme/web@{DIGEST}"
    empty = HostState((), ())
    assert plan.pull_steps(SERVED, None, None, empty, "127.0.0.1:40001") == [
        commands.pull_forwarded("127.0.0.1:40001", "acme/web", DIGEST, "acme/web:v1")
    ]
    assert str(plan.pull_steps(SERVED, None, None, empty)[0]).endswith(
        f"sh 127.0.0.1:PORT acme/web {DIGEST} acme/web:v1"
    )


def test_a_served_release_is_pulled_unless_the_host_keeps_that_very_release() -> None:
    kept = HostState((Container("web-v1", "v1", DIGEST, "exited", "t"),), ())
    assert plan.pull_steps(SERVED, None, None, kept) == []
    other_tag = HostState((Container("web-v0", "v0", DIGEST, "exited", "t"),), ())
    assert [c.purpose for c in plan.pull_steps(SERVED, None, None, other_tag)] == ["docker pull"]
    other_digest = HostState((Container("web-v1", "v1", "sha256:" + "0" * 64, "exited", "t"),), ())
    assert [c.purpose for c in plan.pull_steps(SERVED, None, None, other_digest)] == ["docker pull"]


def _fleet() -> dict[str, FakeHost]:
    return {name: FakeHost(name, healthy={"v1", "v2"}) for name in ("h1", "h2", "h3")}


def test_rollout_forwards_the_local_registry_to_each_host_for_its_pull_only() -> None:
    fakes = _fleet()
    report = _run(fakes, lambda fleet: PlainHosts().rollout(fleet, SERVED, password=None, secrets={}), _inventory())
    assert report.ok and {fake.serving() for fake in fakes.values()} == {"v1"}
    for fake in fakes.values():
        assert fake.forwards == [5123] and not fake.forwarding
        pulls = [c for c in fake.log if c.purpose == "docker pull"]
        assert pulls == [commands.pull_forwarded("127.0.0.1:40001", "acme/web", DIGEST, "acme/web:v1")]
        create = next(c for c in fake.log if c.purpose == "docker create")
        assert create.argv[-1] == "acme/web:v1" and f"deployer.digest={DIGEST}" in create.argv


def test_a_host_keeping_the_release_needs_no_forward() -> None:
    fakes = _fleet()
    rollout: Callable[[Any], Any] = lambda fleet: PlainHosts().rollout(fleet, SERVED, password=None, secrets={})  # noqa: E731
    _run(fakes, rollout, _inventory())
    _run(fakes, rollout, _inventory())
    assert all(fake.forwards == [5123] for fake in fakes.values()), "the second run sends nothing"


def test_a_dry_run_shows_the_forward_and_the_pull() -> None:
    plans = _run(
        _fleet(),
        lambda fleet: PlainHosts().rollout_plan(fleet, SERVED, password=None, secrets={}),  # type: ignore[arg-type,return-value]
        _inventory(),
    )
    lines: list[str] = plans["h1"]  # type: ignore[index]
    assert lines[0] == "# forward 127.0.0.1:PORT of the host to this machine's registry"
    assert lines[1].startswith("sh -c ") and lines[1].endswith(f"sh 127.0.0.1:PORT acme/web {DIGEST} acme/web:v1")
