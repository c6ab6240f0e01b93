"""What runs on a host, compared exactly; secrets never in argv."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployer import commands
from deployer.config import App, Swarm

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
    secrets = {"DATABASE_URL": SecretStr("pg://s3cret"), "TLS_KEY": SecretStr("-----BEGIN\nkey=1\n")}
    command = commands.create_container(APP, "v2", REF, "sha256:abc", secrets)
    assert "s3cret" not in command.render() and "BEGIN" not in command.render()
    assert "s3cret" not in repr(command) and "s3cret" not in str(command)
    assert command.stdin == base64.b64encode(b"pg://s3cret") + b"\n" + base64.b64encode(b"-----BEGIN\nkey=1\n") + b"\n"
    assert command.argv == (
        "sh", "-c",
        'while [ "$1" != -- ]; do IFS= read -r v || exit 1; '
        'v=$(printf "%s\\n" "$v" | base64 -d && echo .) || exit 1; export "$1=${v%.}" || exit 1; shift; done; '
        'shift; exec docker create "$@"',
        "sh", "DATABASE_URL", "TLS_KEY", "--",
        "--name", "web-v2", "--label", "deployer.app=web", "--label", "deployer.release=v2",
        "--label", "deployer.digest=sha256:abc", "--restart", "unless-stopped", "--stop-timeout", "5",
        "--publish", "80:8080", "--volume", "web-data:/var/data", "--env", "LOG_LEVEL=info",
        "--env", "DATABASE_URL", "--env", "TLS_KEY", REF,
    )  # fmt: skip
    assert command.purpose == "docker create"


def test_create_script_hands_docker_every_secret_byte_for_byte(tmp_path: Path) -> None:
    """The script, run by the local sh with a stand-in docker that dumps its environment."""
    values = {
        "MULTI": "line one\nline two\n\n",
        "EQUALS": "a=b=c\n",
        "EMPTY": "",
        "ODD": " lead\ttab 'q' \"d\" $HOME `x` \\ é ✓ \r\n",
        "INJECT": "v\nINJECTED=1",
    }
    command = commands.create_container(APP, "v2", REF, "sha256:abc", {k: SecretStr(v) for k, v in values.items()})
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.argv"\nexec env -0 > "$0.env"\n')
    fake.chmod(0o755)
    done = subprocess.run(
        command.argv, input=command.stdin, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = dict(item.split(b"=", 1) for item in (tmp_path / "docker.env").read_bytes().split(b"\0") if item)
    assert {k: seen[k.encode()].decode() for k in values} == values
    assert b"INJECTED" not in seen
    argv = (tmp_path / "docker.argv").read_text().splitlines()
    assert argv[:3] == ["create", "--name", "web-v2"] and argv[-1] == REF
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--env"] == ["LOG_LEVEL=info", *values]


def test_create_script_refuses_missing_or_garbled_values(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\ntouch \"$0.ran\"\n")
    fake.chmod(0o755)
    command = commands.create_container(APP, "v2", REF, "sha256:abc", {"A": SecretStr("x"), "B": SecretStr("y")})
    for stdin in (command.stdin.split(b"\n")[0] + b"\n", b"!!!not base64\n" * 2):
        done = subprocess.run(command.argv, input=stdin, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, check=False)
        assert done.returncode != 0
        assert not (tmp_path / "docker.ran").exists()


def test_init_flag() -> None:
    app = App.model_validate({"name": "web", "image": "r/web", "container": {"init": True}})
    assert "--init" in commands.create_container(app, "v1", "r/web@sha256:1", "sha256:1", {}).argv


def test_pull_with_password_logs_in_to_a_throwaway_config() -> None:
    command = commands.pull(REF, "r/web:v2", username="deploy", server="reg.example:5000", password=SecretStr("pw-123"))
    assert "pw-123" not in command.render()
    assert command.stdin == b"pw-123\n"
    assert command.argv[4:] == (REF, "r/web:v2", "deploy", "reg.example:5000")
    script = command.argv[2]
    assert "--password-stdin" in script and "mktemp -d" in script and "rm -rf" in script


def test_pull_without_password_uses_the_hosts_own_login() -> None:
    command = commands.pull(REF, "r/web:v2", username=None, server=None, password=None)
    assert command.argv[2] == (
        'docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null || exit 1; '
        'docker image tag "$1" "$2"'
    )
    assert command.argv[4:] == (REF, "r/web:v2")
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
    assert commands.http_probe("http://10.0.0.2:8080/health", 2).argv == (
        "sh", "-c",
        'c=$(curl --globoff --silent --output /dev/null --write-out "%{http_code}" --max-time "$2" "$1"); '
        'case "$c" in [0-9][0-9][0-9]) printf %s "$c" ;; *) printf 000 ;; esac',
        "sh", "http://10.0.0.2:8080/health", "2",
    )  # fmt: skip


def test_volumes_are_never_removed() -> None:
    for command in (commands.remove_containers(["web-a"]), commands.remove_container("web-a")):
        assert "-v" not in command.argv and "--volumes" not in command.argv


# ---------------------------------------------------------------- swarm

SWARM = Swarm.model_validate(
    {"manager": "mgr1", "replicas": 3, "update": {"parallelism": 2, "delay": 5, "monitor": 10}}
)
SETTINGS = (
    "--restart-condition any --restart-max-attempts 0 --stop-grace-period 5s --init=false "
    "--update-failure-action rollback --rollback-failure-action continue "
    "--update-parallelism 2 --update-delay 5s --update-monitor 10s --update-order stop-first "
    "--rollback-parallelism 2 --rollback-delay 5s --rollback-monitor 10s --rollback-order stop-first"
)


def test_service_create_names_the_image_by_digest_and_publishes_in_host_mode() -> None:
    command = commands.create_service(
        APP, SWARM, "v1", REF, "sha256:abc", {"DATABASE_URL": "web-DATABASE_URL-0123abcd"},
        username=None, server=None, password=None,
    )  # fmt: skip
    assert command.render() == (
        "docker service create --detach --no-resolve-image --with-registry-auth --name web "
        "--label deployer.app=web --label deployer.release=v1 --label deployer.digest=sha256:abc "
        f"--replicas 3 {SETTINGS} "
        "--publish mode=host,target=8080,published=80,protocol=tcp "
        "--mount type=volume,source=web-data,target=/var/data --env LOG_LEVEL=info "
        "--secret source=web-DATABASE_URL-0123abcd,target=DATABASE_URL "
        "reg.example:5000/acme/web@sha256:abc"
    )
    assert command.stdin == b""


def test_service_create_logs_in_to_a_throwaway_config_and_forwards_the_login() -> None:
    command = commands.create_service(
        APP, SWARM, "v1", REF, "sha256:abc", {},
        username="deploy", server="reg.example:5000", password=SecretStr("pw-123"),
    )  # fmt: skip
    assert "pw-123" not in command.render() and command.stdin == b"pw-123\n"
    assert command.argv[:2] == ("sh", "-c") and command.purpose == "docker service create"
    assert command.argv[2] == (
        "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; "
        'docker --config "$d" login --username "$1" --password-stdin "$2" >/dev/null || exit 1; '
        'shift 2; docker --config "$d" "$@"'
    )
    assert command.argv[4:10] == ("deploy", "reg.example:5000", "service", "create", "--detach", "--no-resolve-image")
    assert command.argv[-1] == REF


def test_global_service_and_restart_policies() -> None:
    app = App.model_validate({"name": "web", "image": "r/web", "container": {"restart": "on-failure:3", "init": True}})
    swarm = Swarm.model_validate({"manager": "mgr1"})
    argv = commands.create_service(app, swarm, "v1", "r/web@sha256:1", "sha256:1", {},
                                   username=None, server=None, password=None).argv  # fmt: skip
    assert argv[argv.index("--mode") : argv.index("--mode") + 2] == ("--mode", "global")
    assert "--replicas" not in argv and "--init=true" in argv
    assert argv[argv.index("--restart-condition") : argv.index("--restart-condition") + 4] == (
        "--restart-condition", "on-failure", "--restart-max-attempts", "3",
    )  # fmt: skip


def test_service_update_changes_image_labels_settings_and_only_what_differs() -> None:
    changes = commands.ServiceChanges(
        env_rm=("OLD",), env_add=("LOG_LEVEL=info",), publish_rm=("mode=host,target=81,published=81,protocol=tcp",),
        mount_rm=("/old",), secret_rm=("web-DATABASE_URL-11111111",),
        secret_add=("source=web-DATABASE_URL-22222222,target=DATABASE_URL",),
    )  # fmt: skip
    command = commands.update_service(APP, SWARM, "v2", REF, "sha256:abc", changes,
                                      username=None, server=None, password=None)  # fmt: skip
    assert command.render() == (
        "docker service update --detach --no-resolve-image --with-registry-auth "
        "--image reg.example:5000/acme/web@sha256:abc "
        "--label-add deployer.app=web --label-add deployer.release=v2 --label-add deployer.digest=sha256:abc "
        f"--replicas 3 {SETTINGS} "
        "--env-rm OLD --env-add LOG_LEVEL=info --publish-rm mode=host,target=81,published=81,protocol=tcp "
        "--mount-rm /old --secret-rm web-DATABASE_URL-11111111 "
        "--secret-add source=web-DATABASE_URL-22222222,target=DATABASE_URL web"
    )


def test_revert_moves_image_labels_and_secrets_only_without_the_registry() -> None:
    changes = commands.ServiceChanges(secret_rm=("web-A-1",), secret_add=("source=web-A-2,target=A",))
    assert commands.revert_service(APP, "v1", "r/web@sha256:1", "sha256:1", changes).render() == (
        "docker service update --detach --no-resolve-image --image r/web@sha256:1 "
        "--label-add deployer.app=web --label-add deployer.release=v1 --label-add deployer.digest=sha256:1 "
        "--secret-rm web-A-1 --secret-add source=web-A-2,target=A web"
    )


def test_swarm_secret_is_versioned_by_its_value_and_created_from_stdin() -> None:
    name = commands.secret_name(APP, "DATABASE_URL", SecretStr("pg://s3cret"))
    assert name == "web-DATABASE_URL-" + hashlib.sha256(b"pg://s3cret").hexdigest()[:8]
    command = commands.create_secret(APP, name, SecretStr("pg://s3cret"))
    assert "s3cret" not in command.render() and command.stdin == b"pg://s3cret"
    assert command.argv[4:] == (name, "deployer.app=web")
    assert command.argv[2] == (
        'docker secret inspect "$1" >/dev/null 2>&1 </dev/null && exit 0; '
        'docker secret create --label "$2" "$1" - >/dev/null'
    )


def test_swarm_specs_and_service_lifecycle() -> None:
    assert commands.publish_spec("8080") == "mode=host,target=8080,protocol=tcp"
    assert commands.publish_spec("53:53/udp") == "mode=host,target=53,published=53,protocol=udp"
    assert commands.mount_spec("/srv/data:/data:ro") == "type=bind,source=/srv/data,target=/data,readonly"
    assert commands.mount_spec("web-data:/data:rw") == "type=volume,source=web-data,target=/data"
    assert commands.undo_update(APP).render() == "docker service rollback --detach web"
    assert commands.remove_service(APP).render() == "docker service rm web"
    assert commands.remove_secrets(["web-A-1"]).render() == "docker secret rm web-A-1"
    assert commands.read_swarm(APP).argv[4:] == ("web",)


@pytest.mark.parametrize(("answer", "printed"), [("200", "200"), ("503", "503"), ("200404", "000"), ("", "000"), ("2", "000")])
def test_health_probe_prints_exactly_three_digits(tmp_path: Path, answer: str, printed: str) -> None:
    fake = tmp_path / "curl"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "$0.argv"\nprintf "{answer}"\n')
    fake.chmod(0o755)
    command = commands.http_probe("http://10.0.0.2:8080/{health,missing}", 2)
    done = subprocess.run(command.argv, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, printed)
    argv = (tmp_path / "curl.argv").read_text().splitlines()
    assert argv[0] == "--globoff" and argv[-1] == "http://10.0.0.2:8080/{health,missing}"
