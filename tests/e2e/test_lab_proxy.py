"""The lab's proxy pieces on a real lab host: the FROM scratch Caddy image run with its admin
API on a unix socket, routes loaded through it, the WebSocket sample app and the busybox
app behind it, and the load generator and WebSocket probe through it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.load import Load, Target, WsProbe, request, ws_exchange
from tests.lab import Lab, LabHost
from tests.lab.proxy_image import caddy_version, registry_config_digest

pytestmark = pytest.mark.e2e

NETWORK = "lab-proxy-test"
ADMIN_DIR = "/tmp/lab-proxy-admin"  # on the host, bind-mounted into the proxy as /admin
CONTAINERS = ("lab-caddy", "chat1", "chat2", "web1")


def push(lab: Lab, path: str, reference: str) -> None:
    """Build the image at `path` as `reference` with the local engine and push it."""
    lab.client.images.build(path=path, tag=reference, rm=True)
    repository, tag = reference.rsplit(":", 1)
    auth = {"username": lab.registry_user, "password": lab.registry_password}
    errors = [item for item in lab.client.api.push(repository, tag=tag, stream=True, decode=True,
                                                   auth_config=auth) if "error" in item]
    assert errors == []


def docker(lab: Lab, host: LabHost, *args: str, check: bool = True) -> str:
    return lab.host_exec(host, ["docker", *args], check=check).stdout.strip()


def admin(lab: Lab, host: LabHost, method: str, path: str, body: object = None) -> str:
    """Call the proxy's admin API through its unix socket, from the host (the image has no curl)."""
    argv = ["curl", "-sS", "--fail-with-body", "--unix-socket", f"{ADMIN_DIR}/caddy.sock",
            "-X", method, f"http://localhost{path}"]
    data = None
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        data = json.dumps(body).encode()
    return lab.host_exec(host, argv, input=data).stdout


def config(routes: dict[str, str]) -> dict[str, object]:
    """A whole Caddy config: admin on the unix socket, plain HTTP on :80, host -> upstream."""
    return {
        "admin": {"listen": "unix//admin/caddy.sock"},
        "apps": {"http": {"servers": {"lab": {
            "listen": [":80"],
            "automatic_https": {"disable": True},
            "routes": [{"match": [{"host": [name]}],
                        "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": upstream}]}]}
                       for name, upstream in routes.items()],
        }}}},
    }


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def host(clean_lab: Lab) -> Iterator[LabHost]:
    host = clean_lab.hosts[0]
    yield host
    docker(clean_lab, host, "rm", "-f", *CONTAINERS, check=False)
    docker(clean_lab, host, "network", "rm", NETWORK, check=False)
    clean_lab.host_exec(host, ["rm", "-rf", ADMIN_DIR], check=False)


def test_proxy_image_and_sample_apps_serve_through_caddy_on_a_lab_host(clean_lab: Lab, host: LabHost) -> None:
    lab = clean_lab
    proxy = lab.proxy_image()
    assert proxy == f"{lab.registry}/deploy/caddy:{caddy_version()}"
    assert lab.proxy_image() == proxy, "a second call finds the image pushed"
    assert registry_config_digest(lab, proxy) == lab.client.images.get(proxy).id

    lab.init_ws_app()
    chat = f"{lab.registry}/acme/chat"
    push(lab, str(lab.ws_app_repo), f"{chat}:v1")
    lab.commit_ws_app("v2", mode="ignore-sigterm")
    push(lab, str(lab.ws_app_repo), f"{chat}:v2")
    web = f"{lab.registry}/acme/web:v1"
    push(lab, str(lab.app_repo), web)

    lab.host_exec(host, ["docker", "login", "-u", lab.registry_user, "--password-stdin", lab.registry],
                  input=lab.registry_password.encode())
    for image in (proxy, f"{chat}:v1", f"{chat}:v2", web):
        docker(lab, host, "pull", "-q", image)

    # The proxy image holds the caddy binary and nothing else.
    assert docker(lab, host, "run", "--rm", proxy, "version").startswith(f"v{caddy_version()} ")
    no_shell = lab.host_exec(host, ["docker", "run", "--rm", "--entrypoint", "/bin/sh", proxy], check=False)
    assert no_shell.returncode != 0 and "no such file or directory" in no_shell.stderr

    docker(lab, host, "network", "create", NETWORK)
    docker(lab, host, "run", "-d", "--name", "chat1", "--network", NETWORK, f"{chat}:v1")
    docker(lab, host, "run", "-d", "--name", "web1", "--network", NETWORK, web)
    lab.host_exec(host, ["mkdir", "-p", ADMIN_DIR])
    docker(lab, host, "run", "-d", "--name", "lab-caddy", "--network", NETWORK, "-p", "80:80",
           "-v", f"{ADMIN_DIR}:/admin", "-e", "CADDY_ADMIN=unix//admin/caddy.sock", proxy, "run")
    wait_for("the admin socket", lambda: lab.host_exec(
        host, ["test", "-S", f"{ADMIN_DIR}/caddy.sock"], check=False).returncode == 0)
    admin(lab, host, "POST", "/load", config({"chat.lab": "chat1:8080", "web.lab": "web1:8080"}))
    assert json.loads(admin(lab, host, "GET", "/config/admin/listen")) == "unix//admin/caddy.sock"

    chat_target = Target(host.address, 80, host_header="chat.lab", path="/version")
    web_target = Target(host.address, 80, host_header="web.lab", path="/version")
    wait_for("the apps behind the proxy", lambda: request(chat_target).ok and request(web_target).ok)
    with Load([chat_target, web_target], rate=20, max_requests=40) as load:
        assert load.wait(timeout=60)
    summary = load.summary()
    assert (summary.total, summary.failed, summary.bodies) == (40, 0, {"v1"}), summary

    slow_chat = request(Target(host.address, 80, host_header="chat.lab", path="/slow?1"))
    slow_web = request(Target(host.address, 80, host_header="web.lab", path="/cgi-bin/slow?1"))
    assert (slow_chat.status, slow_chat.body) == (200, "v1")
    assert (slow_web.status, slow_web.body) == (200, "v1")
    assert request(Target(host.address, 80, host_header="chat.lab", path="/health")).body == "ok"

    ws = Target(host.address, 80, host_header="chat.lab", path="/ws")
    assert ws_exchange(ws, "hello") == "v1:hello"
    with WsProbe(ws, interval=0.05) as probe:
        wait_for("WebSocket answers", lambda: len(probe.result().answers) >= 3)
    result = probe.result()
    assert result.connected and result.error is None and result.closed_by_probe, result
    assert set(result.versions) == {"v1"}

    # A route change through the admin API moves new connections and requests to v2.
    docker(lab, host, "run", "-d", "--name", "chat2", "--network", NETWORK, f"{chat}:v2")
    wait_for("chat2", lambda: "healthy" in docker(
        lab, host, "inspect", "-f", "{{.State.Health.Status}}", "chat2").split())
    admin(lab, host, "PATCH", "/config/apps/http/servers/lab/routes/0/handle/0/upstreams",
          [{"dial": "chat2:8080"}])
    assert request(chat_target).body == "v2"
    assert ws_exchange(ws, "again") == "v2:again"

    # SIGTERM stops the app; mode ignore-sigterm needs the SIGKILL after the stop timeout.
    docker(lab, host, "stop", "-t", "1", "chat1", "chat2")
    codes = {name: docker(lab, host, "inspect", "-f", "{{.State.ExitCode}}", name) for name in ("chat1", "chat2")}
    assert codes == {"chat1": "0", "chat2": "137"}
