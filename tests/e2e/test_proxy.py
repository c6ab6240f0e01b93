"""Zero-downtime rollouts through the real reverse proxy on each lab host, under request load."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import Lab, LabHost
from tests.lab.pki import make_ca, make_server_cert
from tests.lab.proxy_image import ensure_proxy_image

from .load import Load, Target, WsProbe, request, ws_exchange
from .support import deploy, ok, release

pytestmark = pytest.mark.e2e

NAME = "web.lab.test"
ADMIN = "/var/lib/deploy/proxy/admin.sock"


def _inventory(lab: Lab, path: Path, *, app: dict[str, object] | None = None, **proxy: object) -> str:
    """The lab inventory with the app behind the proxy; an app ignoring SIGTERM (no init)."""
    settings = {"hosts": [NAME], "app_port": 8080, "image": ensure_proxy_image(lab), "drain_timeout": 5, **proxy}
    overrides = {"container": {"ports": [], "init": False, "stop_timeout": 3}, "proxy": settings, **(app or {})}
    return str(lab.write_inventory(path, app_overrides=overrides))


def _targets(lab: Lab, name: str = NAME, **kwargs: object) -> list[Target]:
    return [Target(host.address, 80, host_header=name, **kwargs) for host in lab.hosts]  # type: ignore[arg-type]


def _config(lab: Lab, host: LabHost) -> str:
    """The proxy's configuration on *host*, with its ETag."""
    answer = lab.host_exec(host, ["curl", "-s", "-i", "--unix-socket", ADMIN, "http://admin/config/"]).stdout
    headers, _, body = answer.partition("\r\n\r\n")
    return "".join(line for line in headers.splitlines() if line.lower().startswith("etag:")) + body


def _answers(lab: Lab, name: str = NAME) -> list[str]:
    return [request(target).body for target in _targets(lab, name)]


@pytest.fixture
def proxied(clean_lab: Lab, tmp_path: Path) -> Iterator[tuple[Lab, str]]:
    """The lab with v1 rolled out behind the proxy on every host."""
    inventory = _inventory(clean_lab, tmp_path / "inventory.yaml")
    release(clean_lab)
    ok(deploy(clean_lab, "-i", inventory, "rollout", "--hosts", "lab"))
    yield clean_lab, inventory


class SlowRequests:
    """A 2 s request every 0.5 s to the first host, in the background, bounded."""

    def __init__(self, lab: Lab, limit: int = 400) -> None:
        self.target = Target(lab.hosts[0].address, 80, host_header=NAME, path="/cgi-bin/slow?2")
        self.results: list[tuple[int | None, str]] = []
        self.limit = limit
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> SlowRequests:
        def one() -> None:
            sample = request(self.target, timeout=10)
            self.results.append((sample.status, sample.error or sample.body))

        def loop() -> None:
            while not self._stop.wait(0.5) and len(self._threads) < self.limit:
                thread = threading.Thread(target=one, daemon=True)
                self._threads.append(thread)
                thread.start()

        self._loop = threading.Thread(target=loop, daemon=True)
        self._loop.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._loop.join()
        for thread in self._threads:
            thread.join(15)


def test_rollouts_rollbacks_and_reverts_drop_no_request(proxied: tuple[Lab, str], tmp_path: Path) -> None:
    lab, inventory = proxied
    v1 = lab.hosts and _answers(lab)
    assert v1 == ["v1", "v1", "v1"]
    lab.commit_app("v2")
    v2 = release(lab)
    all_at_once = _inventory(lab, tmp_path / "all.yaml", app={"rollout": {"batch_size": "100%"}})
    configs = [_config(lab, host) for host in lab.hosts]
    with Load(_targets(lab), rate=20, max_seconds=600) as load, SlowRequests(lab) as slow:
        ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "lab"))  # batch 1
        assert _answers(lab) == ["v2"] * 3
        assert [_config(lab, host) for host in lab.hosts] == configs, "moving traffic changes no configuration: no reload"
        ok(deploy(lab, "-i", inventory, "rollback", "--hosts", "lab"))
        assert _answers(lab) == ["v1"] * 3
        ok(deploy(lab, "-i", all_at_once, "rollout", "--hosts", "lab", "--tag", v2))  # 100 %
        assert _answers(lab) == ["v2"] * 3

        lab.commit_app("v3", mode="unhealthy")  # a broken release is kept out
        release(lab)
        broken = deploy(lab, "-i", inventory, "rollout", "--hosts", "lab")
        assert broken.code == 7, broken.output
        assert _answers(lab) == ["v2"] * 3

        lab.commit_app("v4")  # a later host fails: the fleet goes back
        v4 = release(lab)
        image = f"{lab.registry}/acme/web:{v2}"
        lab.host_exec(lab.hosts[2], ["docker", "run", "-d", "--name", f"web-{v4}", image])
        reverted = deploy(lab, "-i", inventory, "rollout", "--hosts", "lab")
        assert reverted.code == 7, reverted.output
        assert "every switched host was put back" in reverted.stderr
        assert _answers(lab) == ["v2"] * 3
    summary = load.summary()
    assert summary.total > 500, summary
    assert summary.failed == 0, summary
    assert summary.bodies <= {"v1", "v2", "v4"}, "only releases that passed their health check answer"
    assert slow.results and all(status == 200 for status, _ in slow.results), slow.results[:5]
    assert {body for _, body in slow.results} <= {"v1", "v2", "v4"}


def test_the_admin_api_is_out_of_reach_of_other_hosts_and_of_apps(proxied: tuple[Lab, str]) -> None:
    lab, _ = proxied
    one, other = lab.hosts[0], lab.hosts[1]
    for port in ("2019", "80"):
        probe = lab.host_exec(other, ["curl", "-s", "-m", "3", f"http://{one.address}:{port}/config/"], check=False)
        assert "admin" not in probe.stdout and "apps" not in probe.stdout, probe.stdout
    app = lab.host_exec(one, ["docker", "ps", "--filter", "label=deployer.app=web", "--format", "{{.Names}}"]).stdout.split()[0]
    for url in ("http://deploy-proxy:2019/config/", "http://localhost:2019/config/"):
        attempt = lab.host_exec(
            one, ["docker", "exec", app, "/bin/busybox", "timeout", "5", "/bin/busybox", "wget", "-q", "-O-", url],
            check=False,
        )
        assert attempt.returncode == 1 and "Connection refused" in attempt.stderr, (attempt.returncode, attempt.stderr)
    mode = lab.host_exec(one, ["stat", "-c", "%a", "/var/lib/deploy/proxy"]).stdout.strip()
    assert mode == "700"
    sysctls = lab.host_exec(one, ["docker", "inspect", "--format", "{{json .HostConfig.Sysctls}}", "deploy-proxy"])
    assert json.loads(sysctls.stdout) == {"net.ipv4.tcp_migrate_req": "1"}, "a reload hands queued connections over"
    assert _answers(lab) == ["v1"] * 3


def test_two_apps_share_a_proxy_and_one_rollout_never_interrupts_the_other(
    proxied: tuple[Lab, str], tmp_path: Path
) -> None:
    lab, web = proxied
    blog = _inventory(lab, tmp_path / "blog.yaml", app={"name": "blog"}, hosts=["blog.lab.test"])
    ok(deploy(lab, "-i", blog, "rollout", "--hosts", "lab"))
    assert _answers(lab, "blog.lab.test") == ["v1"] * 3
    lab.commit_app("v2")
    release(lab)
    with Load(_targets(lab, "blog.lab.test"), rate=20, max_seconds=300) as load:
        ok(deploy(lab, "-i", web, "rollout", "--hosts", "lab"))
        ok(deploy(lab, "-i", web, "rollback", "--hosts", "lab"))
    summary = load.summary()
    assert summary.failed == 0 and summary.bodies == {"v1"}, summary
    status = ok(deploy(lab, "-i", web, "proxy", "status", "--hosts", "lab")).stdout
    assert "blog.lab.test -> blog-" in status and f"{NAME} -> web-" in status

    thief = _inventory(lab, tmp_path / "thief.yaml", app={"name": "thief"}, hosts=[NAME])
    refused = deploy(lab, "-i", thief, "rollout", "--hosts", "lab")
    assert refused.code == 2, refused.output
    assert f"{NAME} is routed to the app web on this host already" in refused.stderr
    assert _answers(lab) == ["v1"] * 3


def test_tls_internal_and_certificate_files_verify(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    release(lab)
    internal = _inventory(lab, tmp_path / "internal.yaml", tls="internal")
    ok(deploy(lab, "-i", internal, "rollout", "--hosts", "lab"))
    ca = json.loads(lab.host_exec(lab.hosts[0], ["curl", "-s", "--unix-socket", ADMIN, "http://admin/pki/ca/local"]).stdout)
    ca_file = tmp_path / "internal-ca.pem"
    ca_file.write_text(ca["root_certificate"])
    secure = Target(lab.hosts[0].address, 443, scheme="https", host_header=NAME, ca_file=ca_file)
    answer = request(secure)
    assert (answer.status, answer.body) == (200, "v1"), answer

    make_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    make_server_cert(tmp_path / "web.pem", tmp_path / "web.key", tmp_path / "ca.pem", tmp_path / "ca.key", [], [NAME])
    files = _inventory(lab, tmp_path / "files.yaml", tls={"cert": str(tmp_path / "web.pem"), "key": str(tmp_path / "web.key")})
    lab.commit_app("v2")
    release(lab)
    result = ok(deploy(lab, "-i", files, "-v", "rollout", "--hosts", "lab"))
    key = (tmp_path / "web.key").read_text().splitlines()[1]
    assert key not in result.output, "the private key never shows"
    for host in lab.hosts:
        answer = request(Target(host.address, 443, scheme="https", host_header=NAME, ca_file=tmp_path / "ca.pem"))
        assert (answer.status, answer.body) == (200, "v2"), answer
    wrong = request(Target(lab.hosts[0].address, 443, scheme="https", host_header=NAME, ca_file=ca_file))
    assert wrong.error is not None, "the internal CA no longer signs the certificate served"


def test_setup_checks_every_host_and_refuses_a_port_held_by_another_program(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))  # without the proxy: the app publishes 8080
    squatter = _inventory(lab, tmp_path / "squat.yaml", http_port=8080, https_port=8443)
    refused = deploy(lab, "-i", squatter, "rollout", "--hosts", "lab")
    assert refused.code == 2, refused.output
    assert "port 8080 is held by a program that is not deploy's proxy" in refused.stderr
    assert [lab.http_get(h, "/version")[1].strip() for h in lab.hosts] == ["v1"] * 3, "nothing was changed"
    setup = deploy(lab, "-i", squatter, "setup", "--hosts", "lab")
    assert setup.code == 2 and "8080 HELD" in setup.stdout, setup.output
    inventory = _inventory(lab, tmp_path / "inventory.yaml")
    table = ok(deploy(lab, "-i", inventory, "setup", "--hosts", "lab")).stdout
    assert table.count("80 free") == 3 and table.count("running") == 3, table
    started = time.monotonic()
    status = ok(deploy(lab, "-i", inventory, "proxy", "status", "--hosts", "lab")).stdout
    assert status.count("running") == 3 and time.monotonic() - started < 60


def test_websockets_stay_on_the_old_release_until_the_drain_ends_and_new_ones_reach_the_new(
    clean_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_lab
    lab.init_ws_app()
    settings = {"hosts": ["chat.lab.test"], "app_port": 8080, "image": ensure_proxy_image(lab), "drain_timeout": 4}
    chat = str(lab.write_ws_inventory(tmp_path / "chat.yaml", app_overrides={"container": {"ports": []}, "proxy": settings}))
    for verb in ("build", "push"):
        ok(deploy(lab, "-i", chat, verb))
    ok(deploy(lab, "-i", chat, "rollout", "--hosts", "lab"))
    lab.commit_ws_app("v2")
    for verb in ("build", "push"):
        ok(deploy(lab, "-i", chat, verb))
    target = Target(lab.hosts[0].address, 80, host_header="chat.lab.test", path="/ws")
    attempts: list[str] = []
    stop = threading.Event()

    def connect_again_and_again() -> None:
        while not stop.wait(0.5) and len(attempts) < 400:
            try:
                attempts.append(ws_exchange(target, "hi"))
            except Exception as exc:
                attempts.append(f"failed: {exc!r}")

    with WsProbe(target, interval=0.2, max_seconds=240) as opened_before:
        assert opened_before.result().connected
        newcomers = threading.Thread(target=connect_again_and_again, daemon=True)
        newcomers.start()
        try:
            ok(deploy(lab, "-i", chat, "rollout", "--hosts", "lab"))
        finally:
            stop.set()
            newcomers.join(30)
        assert opened_before.wait_closed(30), "the old release's connection ends with the drain"
    before = opened_before.result()
    assert before.connected and before.error is None, before
    assert set(before.versions) == {"v1"} and before.unanswered <= 1, before
    assert before.close_code in (1000, 1001), before
    assert not any(answer.startswith("failed") for answer in attempts), attempts
    assert attempts and attempts[-1] == "v2:hi", attempts[-3:]
    assert ws_exchange(target, "again") == "v2:again"
