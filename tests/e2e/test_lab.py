"""Smoke test of the lab itself: SSH with pinned host keys, the TLS registry with auth,
and the sample app built, pushed, pulled and served on every host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import paramiko
import pytest

from tests.lab import Lab, LabHost

pytestmark = pytest.mark.e2e


def ssh_connect(lab: Lab, host: LabHost, known_hosts: Path) -> paramiko.SSHClient:
    """Connect as root with the lab key, trusting only the keys in `known_hosts`."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, username="root", key_filename=str(lab.ssh_key),
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def ssh_run(client: paramiko.SSHClient, command: str, input: str | None = None) -> str:
    """Run a command, return its stdout; fail on a non-zero exit status."""
    stdin, stdout, stderr = client.exec_command(command, timeout=120)
    if input is not None:
        stdin.write(input)
    stdin.channel.shutdown_write()
    out, err = stdout.read().decode(), stderr.read().decode()  # read before the exit status
    status = stdout.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}: {err}"
    return out


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def test_ssh_with_pinned_host_keys(clean_lab: Lab, tmp_path: Path) -> None:
    host_keys = set()
    for host in clean_lab.hosts:
        client = ssh_connect(clean_lab, host, clean_lab.known_hosts)
        try:
            assert ssh_run(client, "hostname").strip() == host.name
            transport = client.get_transport()
            assert transport is not None
            host_keys.add(transport.get_remote_server_key().get_base64())
        finally:
            client.close()
    assert len(host_keys) == len(clean_lab.hosts), "hosts share an SSH host key"

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh_connect(clean_lab, clean_lab.hosts[0], empty).close()


def test_app_pushed_pulled_and_served(clean_lab: Lab, docker_client: docker.DockerClient) -> None:
    repo = f"{clean_lab.registry}/acme/web"
    image = f"{repo}:v1"
    docker_client.images.build(path=str(clean_lab.app_repo), tag=image, rm=True)
    docker_client.login(clean_lab.registry_user, clean_lab.registry_password,
                        registry=clean_lab.registry)
    errors = [item for item in docker_client.images.push(repo, tag="v1", stream=True, decode=True)
              if "error" in item]
    assert errors == []

    for host in clean_lab.hosts:
        client = ssh_connect(clean_lab, host, clean_lab.known_hosts)
        try:
            ssh_run(client, f"docker login -u {clean_lab.registry_user} --password-stdin "
                            f"{clean_lab.registry}", input=clean_lab.registry_password)
            ssh_run(client, f"docker pull -q {image}")
            ssh_run(client, "docker run -d --name web -p 8080:8080 -v web-data:/data "
                            f"-e DATABASE_URL=postgres://db/{host.name} {image}")
            ssh_run(client, "docker exec web /bin/busybox sh -c 'echo stored >/data/value'")
        finally:
            client.close()

    for host in clean_lab.hosts:
        deadline = time.monotonic() + 10
        while clean_lab.http_get(host, "/version")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert clean_lab.http_get(host, "/version") == (200, "v1\n")
        assert clean_lab.http_get(host, "/health") == (200, "ok\n")
        assert clean_lab.http_get(host, "/cgi-bin/env?DATABASE_URL") == (
            200, f"postgres://db/{host.name}\n")
        assert clean_lab.http_get(host, "/cgi-bin/data") == (200, "stored\n")


def test_push_with_wrong_password_fails(clean_lab: Lab, docker_client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError, match=r"401|unauthorized"):
        docker_client.login(clean_lab.registry_user, "wrong-password",
                            registry=clean_lab.registry, reauth=True)

    repo = f"{clean_lab.registry}/acme/web"
    docker_client.images.build(path=str(clean_lab.app_repo), tag=f"{repo}:wrong", rm=True)
    stream = docker_client.images.push(
        repo, tag="wrong", stream=True, decode=True,
        auth_config={"username": clean_lab.registry_user, "password": "wrong-password"})
    errors = [item["error"] for item in stream if "error" in item]
    assert errors, "push with a wrong password did not fail"
