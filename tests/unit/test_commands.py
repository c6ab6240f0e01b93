"""What runs on a host, compared exactly; secrets never in argv."""

from __future__ import annotations

from pydantic import SecretStr

from deployer import commands
from deployer.config import App

APP = App.model_validate(
    {
        "name": "web",
        "image": "reg.example:5000/acme/web",
        "container": {
            "ports": ["80:8080"],
            "env": {"LOG_LEVEL": "info"},
            "volumes": ["web-data:/var/data"],
            "stop_timeout": 5,
        },
    }
)
REF = "reg.example:5000/acme/web@sha256:abc"


def test_create_without_secrets_is_plain_argv() -> None:
    command = commands.create_container(APP, "0123456789ab", REF, "sha256:abc", {})
    assert command.render() == (
        "docker create --name web-0123456789ab --label deployer.app=web --label deployer.release=0123456789ab "
        "--label deployer.digest=sha256:abc --restart unless-stopped --stop-timeout 5 --publish 80:8080 "
        "--volume web-data:/var/data --env LOG_LEVEL=info reg.example:5000/acme/web@sha256:abc"
    )
    assert command.stdin == b""


def test_create_with_secrets_sends_values_on_stdin_only() -> None:
    command = commands.create_container(APP, "v2", REF, "sha256:abc", {"DATABASE_URL": SecretStr("pg://s3cret")})
    assert "s3cret" not in command.render()
    assert "s3cret" not in repr(command) and "s3cret" not in str(command)
    assert command.stdin == b"DATABASE_URL=pg://s3cret\n"
    assert command.argv[:2] == ("sh", "-c")
    assert "umask 077" in command.argv[2] and "rm -f" in command.argv[2]
    assert command.argv[2].endswith('docker create --env-file "$f" "$@"')
    assert command.argv[4:6] == ("--name", "web-v2")
    assert command.argv[-1] == REF


def test_init_flag() -> None:
    app = App.model_validate({"name": "web", "image": "r/web", "container": {"init": True}})
    assert "--init" in commands.create_container(app, "v1", "r/web@sha256:1", "sha256:1", {}).argv


def test_pull_with_password_logs_in_to_a_throwaway_config() -> None:
    command = commands.pull(REF, username="deploy", server="reg.example:5000", password=SecretStr("pw-123"))
    assert "pw-123" not in command.render()
    assert command.stdin == b"pw-123\n"
    assert command.argv[4:] == (REF, "deploy", "reg.example:5000")
    script = command.argv[2]
    assert "--password-stdin" in script and "mktemp -d" in script and "rm -rf" in script


def test_pull_without_password_uses_the_hosts_own_login() -> None:
    command = commands.pull(REF, username=None, server=None, password=None)
    assert command.argv[4:] == (REF,)
    assert command.stdin == b""


def test_lock_and_history_paths() -> None:
    assert commands.acquire_lock(APP, b"{}").argv[4:] == (".deploy/web",)
    assert commands.acquire_lock(APP, b"{}").ok_statuses == frozenset({0, commands.LOCK_HELD})
    assert commands.release_lock(APP, "tok").argv[4:] == (".deploy/web/lock", "tok")
    assert commands.break_lock(APP).render() == "rm -f .deploy/web/lock"
    assert commands.append_history(APP, b"{}\n").argv[4:] == (".deploy/web",)
    assert commands.read_state(APP).argv[4:] == ("deployer.app=web", ".deploy/web/history.jsonl")


def test_container_lifecycle_commands() -> None:
    assert commands.stop("web-v1", 5).render() == "docker container stop --time 5 web-v1"
    assert commands.start("web-v2").render() == "docker container start web-v2"
    assert commands.remove_containers(["web-a", "web-b"]).render() == "docker container rm web-a web-b"
    assert commands.logs("web-v2").render() == "docker container logs --tail 20 web-v2"
    assert commands.http_probe("http://10.0.0.2:8080/health", 2).render() == (
        "curl --silent --output /dev/null --write-out '%{http_code}' --max-time 2 http://10.0.0.2:8080/health"
    )


def test_volumes_are_never_removed() -> None:
    for command in (commands.remove_containers(["web-a"]), commands.remove_container("web-a")):
        assert "-v" not in command.argv and "--volumes" not in command.argv
