"""`deploy rollout` and `deploy rollback` on real hosts over SSH, through the TLS+auth registry."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.lab import Lab

from .support import deploy, inventory_with, ok, popen, release, serving

pytestmark = pytest.mark.e2e


def test_rollout_v1_then_v2_then_rollback_without_the_registry(clean_lab: Lab) -> None:
    lab = clean_lab
    v1 = release(lab)
    first = ok(deploy(lab, "rollout", "--hosts", "lab"))
    assert serving(lab) == ["v1", "v1", "v1"]
    assert "switched" in first.stdout

    lab.commit_app("v2")
    v2 = release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    assert serving(lab) == ["v2", "v2", "v2"]

    status = json.loads(ok(deploy(lab, "status", "--hosts", "lab", "--json")).stdout)
    assert [row["release"] for row in status["hosts"]] == [v2, v2, v2]
    assert status["drift"] is False

    lab.stop_registry()
    back = ok(deploy(lab, "rollback", "--hosts", "lab", "--json"))
    assert serving(lab) == ["v1", "v1", "v1"]
    assert json.loads(back.stdout)["release"] == v1

    history = json.loads(ok(deploy(lab, "history", "--hosts", "lab", "--json")).stdout)
    for entries in history.values():
        assert [(e["action"], e["release"], e["result"]) for e in entries] == [
            ("rollout", v1, "ok"),
            ("rollout", v2, "ok"),
            ("rollback", v1, "ok"),
        ]


def test_unhealthy_release_leaves_the_fleet_on_the_previous_one(clean_lab: Lab) -> None:
    lab = clean_lab
    release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    lab.commit_app("v2", mode="unhealthy")
    bad = release(lab)
    result = deploy(lab, "-i", inventory_with(lab, lab.state_dir, healthcheck={"timeout": 3}), "rollout", "--hosts", "lab")
    assert result.code == 7, result.output
    assert serving(lab) == ["v1", "v1", "v1"]
    assert f"rollout of {bad} failed on 1 host(s)" in result.stderr
    assert "/health answered 404" in result.stdout, "the summary says which URL failed and how"


def test_second_rollout_fails_at_once_while_the_first_holds_the_lock(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.commit_app("v1-slow", mode="slow", slow_seconds=6)
    release(lab)
    first = popen(lab, "rollout", "--hosts", "lab")
    deadline = time.monotonic() + 60
    while lab.host_exec(lab.hosts[0], ["test", "-f", "/var/lib/deploy/apps/web/lock"], check=False).returncode:
        assert time.monotonic() < deadline and first.poll() is None, "the first rollout never took the lock"
        time.sleep(0.1)
    started = time.monotonic()
    second = deploy(lab, "rollout", "--hosts", "lab")
    assert time.monotonic() - started < 10
    assert second.code == 6, second.output
    assert "web is locked by" in second.stderr and " since " in second.stderr
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert serving(lab) == ["v1-slow"] * 3
    for host in lab.hosts:
        assert lab.host_exec(host, ["test", "-e", "/var/lib/deploy/apps/web/lock"], check=False).returncode == 1


def test_changed_and_unknown_host_keys_are_refused(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    release(lab)
    lines = lab.known_hosts.read_text().splitlines()
    first, second = lines[0].split(), lines[1].split()
    forged = tmp_path / "known_hosts"
    forged.write_text("\n".join([f"{first[0]} {second[1]} {second[2]}", *lines[1:]]) + "\n")
    inventory = lab.write_inventory(tmp_path / "inv.yaml", ssh={"known_hosts": str(forged)})
    result = deploy(lab, "-i", str(inventory), "rollout", "--hosts", "lab")
    assert result.code == 5, result.output
    assert f"{first[0]}: HOST KEY CHANGED" in result.stderr and "ssh-keygen -R" in result.stderr
    assert serving(lab) == ["HTTP 0"] * 3, "nothing changed anywhere"

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    inventory = lab.write_inventory(tmp_path / "inv2.yaml", ssh={"known_hosts": str(empty)})
    result = deploy(lab, "-i", str(inventory), "status", "--hosts", "lab")
    assert result.code == 5, result.output
    assert "host key not known" in result.stderr and "--accept-new-host-keys" in result.stderr
    assert empty.read_text() == "", "nothing added to known_hosts unless asked"

    accepted = deploy(lab, "-i", str(inventory), "status", "--hosts", "lab", "--accept-new-host-keys")
    assert accepted.code == 0, accepted.output
    assert sorted(empty.read_text().split()) == sorted(lab.known_hosts.read_text().split())


def test_volume_data_survives_rollout_and_rollback(clean_lab: Lab) -> None:
    lab = clean_lab
    v1 = release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    for host in lab.hosts:
        lab.host_exec(host, ["docker", "exec", f"web-{v1}", "/bin/busybox", "sh", "-c", f"echo kept-{host.name} > /data/value"])
    lab.commit_app("v2")
    release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    assert [lab.http_get(h, "/cgi-bin/data")[1].strip() for h in lab.hosts] == [f"kept-{h.name}" for h in lab.hosts]
    ok(deploy(lab, "rollback", "--hosts", "lab"))
    assert [lab.http_get(h, "/cgi-bin/data")[1].strip() for h in lab.hosts] == [f"kept-{h.name}" for h in lab.hosts]


def test_secrets_reach_the_app_but_never_argv_output_or_disk(clean_lab: Lab) -> None:
    lab = clean_lab
    sentinel = "s3ntinel-" + str(time.time_ns())
    inventory = inventory_with(lab, lab.state_dir, container={"secrets": ["DATABASE_URL"]})
    tag = release(lab, "-i", inventory, env={"DATABASE_URL": sentinel})
    seen: list[str] = []
    stop = threading.Event()

    def watch_process_lists() -> None:
        while not stop.is_set():
            seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout)
            for host in lab.hosts:
                seen.append(lab.host_exec(host, ["ps", "-eo", "args"], check=False).stdout)

    watcher = threading.Thread(target=watch_process_lists)
    watcher.start()
    try:
        result = deploy(lab, "-v", "-i", inventory, "rollout", "--hosts", "lab", env={"DATABASE_URL": sentinel})
    finally:
        stop.set()
        watcher.join()
    assert result.code == 0, result.output
    assert len(seen) > 3
    assert not any(sentinel in listing for listing in seen), "secret visible in a process list"
    image_history = subprocess.run(
        ["docker", "history", "--no-trunc", f"{lab.registry}/acme/web:{tag}"], capture_output=True, text=True, check=True
    ).stdout
    assert sentinel not in image_history and lab.registry_password not in image_history
    assert sentinel not in result.output
    assert [lab.http_get(h, "/cgi-bin/env?DATABASE_URL")[1].strip() for h in lab.hosts] == [sentinel] * 3
    password = lab.registry_password
    for host in lab.hosts:
        # runc's own /tmp/runc-process* files hold a container's environment while Docker runs a
        # HEALTHCHECK in it; they are Docker's, root-only, and gone when the check ends.
        leftovers = lab.host_exec(host, ["grep", "-rlF", "--exclude=runc-process*", sentinel, "/tmp", "/root", "/var/lib/deploy"], check=False)
        assert leftovers.stdout == "", f"secret left on disk: {leftovers.stdout}"
        leftovers = lab.host_exec(host, ["grep", "-rlF", password, "/tmp", "/root", "/var/lib/deploy"], check=False)
        assert leftovers.stdout == "", f"registry password left on disk: {leftovers.stdout}"
        modes = lab.host_exec(host, ["stat", "-c", "%a %n", "/var/lib/deploy/apps/web", "/var/lib/deploy/apps/web/history.jsonl"])
        assert modes.stdout.split()[::2] == ["770", "660"], "shared by the deploy group, not by others"



def test_multi_line_secrets_arrive_byte_for_byte_and_add_no_variable(clean_lab: Lab) -> None:
    lab = clean_lab
    values = {
        "TLS_KEY": "-----BEGIN KEY-----\nMIIB+/=\nINJECTED=1\n-----END KEY-----",
        "DSN": "postgres://u:p@db/x?a=b=c\n",
        "QUOTED": " 'single' \"double\" $HOME `cmd` \\ \t é ",
    }
    inventory = inventory_with(lab, lab.state_dir, container={"secrets": list(values)})
    not_utf8 = b"s3cr\xffet".decode("utf-8", "surrogateescape")
    refused = deploy(lab, "-i", inventory, "rollout", "--hosts", "lab", env={**values, "DSN": not_utf8})
    assert refused.code == 2, refused.output
    assert "app.container.secrets names DSN, whose value is not UTF-8 text" in refused.stderr
    assert "s3cr" not in refused.output and "xff" not in refused.output and "position" not in refused.output

    tag = release(lab, "-i", inventory, env=values)
    result = ok(deploy(lab, "-v", "-i", inventory, "rollout", "--hosts", "lab", env=values))
    assert not any(part in result.output for value in values.values() for part in value.split("\n") if len(part) > 3)
    for host in lab.hosts:
        inspected = lab.host_exec(host, ["docker", "container", "inspect", "--format", "{{json .Config.Env}}", f"web-{tag}"])
        env = dict(item.split("=", 1) for item in json.loads(inspected.stdout))
        assert {name: env.get(name) for name in values} == values
        assert "INJECTED" not in env
        # what the app's process itself was started with, byte for byte
        environ = lab.host_exec(host, ["docker", "exec", f"web-{tag}", "/bin/busybox", "cat", "/proc/1/environ"]).stdout
        started = dict(item.split("=", 1) for item in environ.split("\0") if item)
        assert {name: started.get(name) for name in values} == values
        assert "INJECTED" not in started


def test_dry_run_prints_the_commands_and_changes_nothing(clean_lab: Lab) -> None:
    lab = clean_lab
    v1 = release(lab)
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    lab.commit_app("v2")
    v2 = release(lab)
    before = [lab.host_exec(h, ["cat", "/var/lib/deploy/apps/web/history.jsonl"]).stdout for h in lab.hosts]
    result = ok(deploy(lab, "rollout", "--hosts", "lab", "--dry-run"))
    assert f"docker container stop --time 10 web-{v1} && docker container start web-{v2} && " in result.stdout, (
        "one round trip stops v1 and starts v2"
    )
    assert result.stdout.count("docker create") == 3
    assert serving(lab) == ["v1", "v1", "v1"]
    assert [lab.host_exec(h, ["cat", "/var/lib/deploy/apps/web/history.jsonl"]).stdout for h in lab.hosts] == before
    images = lab.host_exec(lab.hosts[0], ["docker", "image", "ls", "--format", "{{.Tag}}"]).stdout.split()
    assert v2 not in images, "a dry run pulls nothing"


NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent.sock"}


def test_rollout_and_rollback_need_no_docker_engine_here(clean_lab: Lab) -> None:
    lab = clean_lab
    v1 = release(lab)
    pushed = lab.client.images.get(f"{lab.registry}/acme/web:{v1}").attrs["RepoDigests"]
    lab.commit_app("v2")
    v2 = release(lab)

    first = ok(deploy(lab, "rollout", "--hosts", "lab", "--tag", v1, env=NO_ENGINE))
    assert f"release {v1} is {pushed[0]}\n" in first.stderr, "the digest the push recorded"
    assert serving(lab) == ["v1", "v1", "v1"]
    ok(deploy(lab, "rollout", "--hosts", "lab", env=NO_ENGINE))
    assert serving(lab) == ["v2", "v2", "v2"]
    status = json.loads(ok(deploy(lab, "status", "--hosts", "lab", "--json", env=NO_ENGINE)).stdout)
    assert [row["release"] for row in status["hosts"]] == [v2, v2, v2]
    ok(deploy(lab, "rollback", "--hosts", "lab", env=NO_ENGINE))
    assert serving(lab) == ["v1", "v1", "v1"]


def test_credentials_from_the_docker_config_without_app_registry(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    tag = release(lab)
    inventory = inventory_with(lab, tmp_path, registry=None)
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    env = {**NO_ENGINE, "DOCKER_CONFIG": str(config_dir)}

    anonymous = deploy(lab, "-i", inventory, "rollout", "--hosts", "lab", "--dry-run", env=env)
    assert anonymous.code == 4, anonymous.output
    assert f"hint: run `docker login {lab.registry}`" in anonymous.stderr

    login = base64.b64encode(f"{lab.registry_user}:{lab.registry_password}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {lab.registry: {"auth": login}}}))
    dry = ok(deploy(lab, "-i", inventory, "rollout", "--hosts", "lab", "--dry-run", env=env))
    assert f"release {tag} is {lab.registry}/acme/web@sha256:" in dry.stderr


def test_rollout_with_a_wrong_registry_password_or_an_unknown_tag_changes_nothing(clean_lab: Lab) -> None:
    lab = clean_lab
    release(lab)
    wrong = "Wr0ng-" + lab.registry_password[:6]
    for args in (("rollout",), ("-v", "rollout")):
        refused = deploy(lab, *args, "--hosts", "lab", env={**NO_ENGINE, "DEPLOY_REGISTRY_PASSWORD": wrong})
        assert refused.code == 4, refused.output
        assert "unauthorized: the registry refused the credentials (HTTP 401)" in refused.stderr
        assert "hint: check app.registry.username (deploy) and the password in $DEPLOY_REGISTRY_PASSWORD" in (
            refused.stderr
        )
        assert wrong not in refused.output and lab.registry_password not in refused.output

    unknown = deploy(lab, "rollout", "--hosts", "lab", "--tag", "0123456789ab", env=NO_ENGINE)
    assert unknown.code == 2, unknown.output
    assert f"error: {lab.registry}/acme/web:0123456789ab is not in the registry\n" in unknown.stderr
    assert serving(lab) == ["HTTP 0"] * 3, "no host was touched"


def test_a_rollout_logs_in_once_per_host(clean_lab: Lab) -> None:
    lab = clean_lab
    release(lab)

    def logins() -> list[tuple[int, int]]:
        logs = [lab.sshd_log(host) for host in lab.hosts]
        return [(sum("Accepted publickey" in line for line in log), sum("Starting session" in line for line in log))
                for log in logs]

    before = logins()
    ok(deploy(lab, "rollout", "--hosts", "lab"))
    after = logins()
    for (connections, sessions), (connections_then, sessions_then) in zip(after, before, strict=True):
        assert connections - connections_then == 1, (before, after)
        assert sessions - sessions_then >= 3, "sshd logs each command the rollout runs"
