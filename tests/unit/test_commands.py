"""What runs on a host, compared exactly; secrets never in argv."""

from __future__ import annotations

from pydantic import SecretStr

from deployer import commands
from deployer.config import App, Registry

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


LOGIN = commands.Login("deploy", "reg.example:5000", SecretStr("pw-123"))


def test_pull_with_password_logs_in_to_a_throwaway_config() -> None:
    command = commands.pull(REF, "r/web:v2", login=LOGIN)
    assert "pw-123" not in command.render()
    assert command.stdin == b"pw-123\n"
    assert command.argv[4:] == ("deploy", "reg.example:5000", REF, "r/web:v2")
    script = command.argv[2]
    assert "--password-stdin" in script and "mktemp -d" in script and "rm -rf" in script


def test_pull_without_password_uses_the_hosts_own_login() -> None:
    command = commands.pull(REF, "r/web:v2", login=None)
    assert command.argv[2] == (
        'login() { :; }; dk() { docker "$@"; }; '
        'dk image inspect "$1" >/dev/null 2>&1 || { login || exit 1; dk pull -q "$1" >/dev/null || exit 1; }; '
        'dk image tag "$1" "$2"'
    )
    assert command.argv[4:] == (REF, "r/web:v2")
    assert command.stdin == b""


def test_login_only_with_a_user_and_a_password() -> None:
    registry = Registry(server="reg.example:5000", username="deploy")
    assert commands.login_for(registry, SecretStr("pw-123")) == LOGIN
    assert commands.login_for(registry, None) is None
    assert commands.login_for(Registry(server="reg.example:5000"), SecretStr("pw-123")) is None
    assert commands.login_for(None, SecretStr("pw-123")) is None


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


