"""What runs on a host, compared exactly; secrets never in argv."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
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


LOGIN = commands.Login("deploy", "reg.example:5000", SecretStr("pw-123"))


def test_pull_with_password_logs_in_to_a_throwaway_config() -> None:
    command = commands.pull(REF, "r/web:v2", login=LOGIN)
    assert "pw-123" not in command.render()
    assert json.loads(command.stdin) == {"auths": {"reg.example:5000": {"auth": "ZGVwbG95OnB3LTEyMw=="}}}
    assert base64.b64decode("ZGVwbG95OnB3LTEyMw==") == b"deploy:pw-123"
    assert command.argv[2] == (
        'd=; trap \'[ -z "$d" ] || rm -rf "$d"\' EXIT; '
        'login() { d=$(mktemp -d) && (umask 077 && cat > "$d/config.json"); }; '
        'dk() { if [ -n "$d" ]; then docker --config "$d" "$@"; else docker "$@"; fi; }; '
        'dk image inspect "$1" >/dev/null 2>&1 || { login || exit 1; dk pull "$1" || exit 1; }; '
        'dk image tag "$1" "$2"'
    )
    assert command.argv[3:] == ("sh", REF, "r/web:v2")


def test_a_docker_hub_login_is_filed_under_the_key_docker_looks_up() -> None:
    for server in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        config = json.loads(commands.Login("u", server, SecretStr("p")).docker_config())
        assert list(config["auths"]) == ["https://index.docker.io/v1/"]


def test_pull_without_password_uses_the_hosts_own_login() -> None:
    command = commands.pull(REF, "r/web:v2", login=None)
    assert command.argv[2] == (
        'login() { :; }; dk() { docker "$@"; }; '
        'dk image inspect "$1" >/dev/null 2>&1 || { login || exit 1; dk pull "$1" || exit 1; }; '
        'dk image tag "$1" "$2"'
    )
    assert command.argv[4:] == (REF, "r/web:v2")
    assert command.stdin == b""


def test_a_pull_the_host_needs_skips_asking_whether_it_has_the_image() -> None:
    command = commands.pull(REF, "r/web:v2", login=None, unless_present=False)
    assert command.argv[2] == (
        'login() { :; }; dk() { docker "$@"; }; login || exit 1; dk pull "$1" || exit 1; dk image tag "$1" "$2"'
    )


# What `docker pull` printed without a terminal on a lab host (dockerd and CLI 20.10.24), by
# digest as a rollout pulls, and by a tag of 12 hex digits (as release tags are).
PULLED_BY_DIGEST = """\
172.30.57.2:5000/acme/web@sha256:f601465a145c4222fd226a71a601014378a2468a640866dfd03c70acff6db578: Pulling from acme/web
17e4b8bfe3a8: Pulling fs layer
417b72941ca9: Pulling fs layer
417b72941ca9: Verifying Checksum
417b72941ca9: Download complete
17e4b8bfe3a8: Verifying Checksum
17e4b8bfe3a8: Download complete
17e4b8bfe3a8: Pull complete
417b72941ca9: Pull complete
Digest: sha256:f601465a145c4222fd226a71a601014378a2468a640866dfd03c70acff6db578
Status: Downloaded newer image for 172.30.57.2:5000/acme/web@sha256:f601465a145c4222fd226a71a601014378a2468a640866dfd03c70acff6db578
172.30.57.2:5000/acme/web@sha256:f601465a145c4222fd226a71a601014378a2468a640866dfd03c70acff6db578
"""
PULLED_BY_TAG = """\
750d6b7a53ff: Pulling from acme/web
17e4b8bfe3a8: Pulling fs layer
417b72941ca9: Pulling fs layer
"""


def test_pull_lines_name_a_layer_and_its_state() -> None:
    lines = PULLED_BY_DIGEST.splitlines()
    assert [commands.parse_pull_line(line) for line in lines] == [
        None,
        ("17e4b8bfe3a8", "Pulling fs layer"),
        ("417b72941ca9", "Pulling fs layer"),
        ("417b72941ca9", "Verifying Checksum"),
        ("417b72941ca9", "Download complete"),
        ("17e4b8bfe3a8", "Verifying Checksum"),
        ("17e4b8bfe3a8", "Download complete"),
        ("17e4b8bfe3a8", "Pull complete"),
        ("417b72941ca9", "Pull complete"),
        None,
        None,
        None,
    ]
    assert commands.parse_pull_line("750d6b7a53ff: Pulling from acme/web") is None, "a tag, not a layer"
    assert commands.parse_pull_line("d1f2c3b4a5e6: Already exists\r") == ("d1f2c3b4a5e6", "Already exists")


def test_a_pull_counts_layers_done_of_the_layers_named_so_far() -> None:
    counts = []
    count = commands.PullCount()
    for line in PULLED_BY_DIGEST.splitlines():
        count = count.add(line)
        counts.append((count.done, count.total))
    assert counts == [(0, 0), (0, 1), (0, 2), (0, 2), (0, 2), (0, 2), (0, 2), (1, 2), (2, 2), (2, 2), (2, 2), (2, 2)]
    assert count == commands.count_pull(PULLED_BY_DIGEST)
    assert count.layers == ("17e4b8bfe3a8", "417b72941ca9")
    assert (commands.count_pull(PULLED_BY_TAG).done, commands.count_pull(PULLED_BY_TAG).total) == (0, 2)
    # a layer the host has already counts as done (line made up in the engine's format)
    again = commands.count_pull("sha256:ab: Pulling from acme/web\n17e4b8bfe3a8: Already exists\n"
                                "5b0e3c9d8f7a: Pulling fs layer\n")
    assert (again.done, again.total) == (1, 2)
    assert commands.count_pull("") == commands.PullCount(), "the host had the image: nothing pulled"


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
    assert commands.http_probe("http://10.0.0.2:8080/health", 2).argv == (
        "sh", "-c",
        'c=$(curl --globoff --silent --output /dev/null --write-out "%{http_code}" --max-time "$2" "$1"); '
        'case "$c" in [0-9][0-9][0-9]) printf %s "$c" ;; *) printf 000 ;; esac',
        "sh", "http://10.0.0.2:8080/health", "2",
    )  # fmt: skip


def test_volumes_are_never_removed() -> None:
    for command in (commands.remove_containers(["web-a"]), commands.remove_container("web-a")):
        assert "-v" not in command.argv and "--volumes" not in command.argv


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


def test_a_chain_runs_its_commands_in_one_round_trip_and_stops_at_the_first_failure() -> None:
    first = commands.RemoteCommand(("echo", "first"))
    failing = commands.script("fail", 'echo "$1" >&2; exit 3', "it's broken")
    last = commands.RemoteCommand(("echo", "last word"), waits=2)
    chained = commands.chain(first, commands.stop("web-v1", 5), last)
    assert str(chained) == "echo first && docker container stop --time 5 web-v1 && echo 'last word'"
    assert chained.waits == 7 and chained.purpose == "echo, then docker container stop, then echo"

    def run(command: commands.RemoteCommand) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", command.render()], capture_output=True, text=True, check=False)

    done = run(commands.chain(first, last))
    assert (done.returncode, done.stdout) == (0, "last word\n"), "only the last command answers"
    done = run(commands.chain(first, failing, last))
    assert (done.returncode, done.stdout, done.stderr) == (3, "", "it's broken\n"), "the failure ends it, with its status"
    with pytest.raises(ValueError):
        commands.chain(commands.RemoteCommand(("cat",), stdin=b"secret"), last)
