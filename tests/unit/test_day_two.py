"""Day two, without a network: the one-off, exec and logs commands compared exactly, streams over
a fake SSH server, the before_switch hook on scripted hosts, and the after hooks' environment."""

from __future__ import annotations

import base64
import io
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployer import commands, config, hooks, inventory, transport
from deployer import fleet as fleet_module
from deployer.config import App
from deployer.errors import CommandError, ConfigError, Interrupted, RolloutError, UsageError
from deployer.output import Output
from deployer.plan import Release
from deployer.targets import operate, swarm_service
from deployer.targets.plain import PlainHosts

from .fakehost import FakeContainer, FakeHost
from .fakessh import FakeSSHServer, client_key

APP = App.model_validate(
    {
        "name": "web",
        "image": "r/web",
        "container": {
            "ports": ["80:8080"],
            "env": {"LOG_LEVEL": "info"},
            "volumes": ["web-data:/var/data"],
            "init": True,
        },
    }
)
REF = "r/web@sha256:abc"


# ---------------------------------------------------------------- commands


def test_one_off_without_secrets_is_plain_argv_with_env_and_volumes_and_no_ports() -> None:
    command = commands.one_off(APP, "web-run-1a2b", REF, ["python", "manage.py", "migrate"], {})
    assert command.render() == (
        "docker run --rm --name web-run-1a2b --label deployer.one-off=web --init --volume web-data:/var/data "
        "--env LOG_LEVEL=info --entrypoint python r/web@sha256:abc manage.py migrate"
    )
    assert command.stdin == b"" and command.purpose == "docker run"


def test_one_off_on_the_proxy_network_quotes_the_command() -> None:
    command = commands.one_off(APP, "web-run-1", REF, ["sh", "-c", "echo $A; rm -rf /x"], {}, network="deploy")
    assert command.argv[-4:] == ("sh", REF, "-c", "echo $A; rm -rf /x")
    assert "--network deploy" in command.render()
    assert command.render().endswith("--entrypoint sh r/web@sha256:abc -c 'echo $A; rm -rf /x'")


def test_one_off_with_secrets_shares_create_s_mechanism(tmp_path: Path) -> None:
    secrets = {"DATABASE_URL": SecretStr("pg://s3cret\n")}
    command = commands.one_off(APP, "web-run-1", REF, ["env"], secrets)
    assert "s3cret" not in command.render() and "s3cret" not in repr(command)
    assert command.stdin == base64.b64encode(b"pg://s3cret\n") + b"\n"
    assert command.argv[2].endswith('shift; exec docker run "$@"')
    assert command.argv[3:] == (
        "sh", "DATABASE_URL", "--",
        "--rm", "--name", "web-run-1", "--label", "deployer.one-off=web", "--init",
        "--volume", "web-data:/var/data", "--env", "LOG_LEVEL=info", "--entrypoint", "env", "--env", "DATABASE_URL",
        REF,
    )  # fmt: skip
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.argv"\nprintf %s "$DATABASE_URL" > "$0.env"\n')
    fake.chmod(0o755)
    done = subprocess.run(command.argv, input=command.stdin, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=False)
    assert done.returncode == 0
    assert (tmp_path / "docker.env").read_text() == "pg://s3cret\n"
    assert (tmp_path / "docker.argv").read_text().splitlines()[:2] == ["run", "--rm"]


def test_hook_commands_lists_as_is_strings_through_sh() -> None:
    assert commands.hook_argv(["a", "b c"]) == ["a", "b c"]
    assert commands.hook_argv("migrate && seed") == ["sh", "-c", "migrate && seed"]


def test_exec_kill_and_log_commands() -> None:
    assert commands.exec_in("web-v1", ["ls", "-l"]).argv == ("docker", "container", "exec", "web-v1", "ls", "-l")
    assert commands.exec_in("web-v1", ["sh"], terminal=True).argv == (
        "docker", "container", "exec", "--interactive", "--tty", "web-v1", "sh",
    )  # fmt: skip
    assert commands.kill_container("web-run-1").argv == ("docker", "container", "rm", "--force", "web-run-1")
    assert commands.follow_logs("web-v1", follow=True, tail=100, since="10m").argv == (
        "docker", "container", "logs", "--follow", "--tail", "100", "--since", "10m", "web-v1",
    )  # fmt: skip
    assert commands.follow_logs("web-v1", follow=False, tail=None, since=None).argv == (
        "docker", "container", "logs", "web-v1",
    )  # fmt: skip
    assert swarm_service.service_logs(APP, follow=True, tail=5, since=None).argv == (
        "docker", "service", "logs", "--follow", "--tail", "5", "web",
    )  # fmt: skip


@pytest.mark.parametrize("value", ["10m", "1h30m", "1.5h", "2026-01-31", "2026-01-31T08:00:00Z", "1700000000"])
def test_since_takes_durations_and_times(value: str) -> None:
    assert operate.since(value) == value


@pytest.mark.parametrize("value", ["10 minutes", "yesterday", "-1m", ""])
def test_since_refuses_anything_else(value: str) -> None:
    with pytest.raises(UsageError, match="is neither a duration nor a time"):
        operate.since(value)


# ---------------------------------------------------------------- the inventory


def _app(hooks_yaml: str) -> App:
    return config.parse(f"app:\n  name: web\n  image: r/web\n  hooks: {hooks_yaml}\nhosts: {{p: [h]}}\n").app


def test_hooks_take_argv_lists_and_strings_with_bounded_timeouts() -> None:
    app = _app("{before_switch: [[manage, migrate], 'a && b'], after: [notify]}")
    assert app.hooks.before_switch == [["manage", "migrate"], "a && b"]
    assert (app.hooks.before_switch_timeout, app.hooks.after_timeout) == (600, 60)


@pytest.mark.parametrize(
    ("hooks_yaml", "message"),
    [
        ("{before_switch: [[]]}", "a hook command list must name a program first"),
        ("{after: ['  ']}", "a hook command must not be empty"),
        ("{before_switch_timeout: 0}", "greater than 0"),
        ("{after_timeout: 99999}", "less than or equal to 3600"),
        ("{befor_switch: []}", "unknown key (did you mean 'before_switch'?)"),
    ],
)
def test_bad_hooks_are_refused(hooks_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        _app(hooks_yaml)


# ---------------------------------------------------------------- streams over SSH


@pytest.fixture
def server() -> Iterator[Callable[[str], FakeSSHServer]]:
    started: list[FakeSSHServer] = []

    def start(behaviour: str) -> FakeSSHServer:
        started.append(FakeSSHServer(behaviour))
        return started[-1]

    yield start
    for each in started:
        each.close()


def _connect(server: FakeSSHServer, tmp_path: Path) -> transport.SSHTransport:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    host = inventory.Host("fake", "127.0.0.1", server.port, "deploy", (str(client_key(tmp_path)),))
    return transport.SSHTransport(host, transport.SSHOptions(known_hosts=(known_hosts,), connect_timeout=5))


def test_line_splitter_keeps_partial_lines_and_drops_terminal_line_ends() -> None:
    split = transport.LineSplitter()
    assert split.feed(b"one\r\ntw") == ["one"]
    assert split.feed(b"o\n\nthr\xc3") == ["two", ""]
    assert split.feed(b"\xa9e") == []
    assert split.flush() == ["thr\u00e9e"]
    assert split.flush() == []


def test_a_stream_hands_over_the_output_and_the_exit_status(
    server: Callable[[str], FakeSSHServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    ssh = _connect(server("ok"), tmp_path)
    got: list[tuple[bytes, bool]] = []
    status = ssh.stream(commands.RemoteCommand(("cat",), stdin=b"input"), lambda data, err: got.append((data, err)))
    assert status == 0
    assert b"".join(data for data, _ in got) == b"cat\ninput" and not any(err for _, err in got)
    ssh.close()


def test_a_stream_ends_within_a_poll_of_a_stop_and_at_its_deadline(
    server: Callable[[str], FakeSSHServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    fake = server("hang")
    ssh = _connect(fake, tmp_path)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    logs = commands.follow_logs("web-v1", follow=True, tail=0, since=None)
    with pytest.raises(Interrupted, match="fake: docker logs stopped"):
        ssh.stream(logs, lambda data, err: None, cancel=cancel, terminal=True)
    assert fake.ptys == [("dumb", 200, 50)], "logs that follow run on a terminal, which the host hangs up"
    with pytest.raises(CommandError, match=r"fake: docker run did not finish within 0.3 s; stopped"):
        ssh.stream(commands.one_off(APP, "web-run-1", REF, ["sleep"], {}), lambda data, err: None, timeout=0.3)
    ssh.close()


def test_a_command_on_a_terminal_gets_no_stdin() -> None:
    ssh = transport.SSHTransport.__new__(transport.SSHTransport)
    with pytest.raises(ValueError, match="gets no stdin"):
        ssh.stream(commands.RemoteCommand(("cat",), stdin=b"secret"), lambda data, err: None, terminal=True)


# ---------------------------------------------------------------- the before_switch hook on scripted hosts

V1 = Release("r/web", "v1", "sha256:1")
V2 = Release("r/web", "v2", "sha256:2")


def _inventory(hooks_yaml: str) -> config.Inventory:
    return config.parse(
        "app:\n  name: web\n  image: r/web\n"
        "  healthcheck: {path: /health, port: 8080, timeout: 0.3, interval: 0.01}\n"
        f"  hooks: {hooks_yaml}\n"
        "hosts: {prod: [h1, h2]}\n"
    )


def _rollout(fakes: dict[str, FakeHost], inv: config.Inventory, release: Release) -> tuple[object, str]:
    err = io.StringIO()
    with fleet_module.open_fleet(
        inv,
        [inventory.Host(name, name, 22, "root") for name in fakes],
        connect=lambda host: fakes[host.name],
        out=Output(verbosity=0, stdout=io.StringIO(), stderr=err),
        cancel=threading.Event(),
        lock_for="test",
    ) as fleet:
        try:
            return PlainHosts().rollout(fleet, release, password=None, secrets={"S": SecretStr("v")}), err.getvalue()
        except RolloutError as exc:
            return exc, err.getvalue()


def _one_offs(fake: FakeHost) -> list[commands.RemoteCommand]:
    return [c for c in fake.log if c.purpose == "docker run"]


def test_before_switch_runs_once_on_the_first_host_with_secrets_and_is_recorded() -> None:
    fakes = {name: FakeHost(name, healthy={"v1", "v2"}) for name in ("h1", "h2")}
    fakes["h1"].stream_output = b"migrated 3 tables\n"
    report, err = _rollout(fakes, _inventory("{before_switch: [[manage, migrate]]}"), V1)
    assert not isinstance(report, RolloutError)
    ran = _one_offs(fakes["h1"])
    assert len(ran) == 1 and _one_offs(fakes["h2"]) == []
    assert ran[0].argv[-6:] == ("--entrypoint", "manage", "--env", "S", "r/web@sha256:1", "migrate")
    assert ran[0].stdin == b"dg==\n"
    assert "migrated 3 tables" in err
    hook_line, *_ = [line for line in fakes["h1"].history if '"before_switch"' in line]
    assert '"result": "exit 0"' in hook_line and '"command": "manage migrate"' in hook_line
    # before the first switch: the hook's line precedes every other line of the host
    assert '"before_switch"' in fakes["h1"].history[0]

    _rollout(fakes, _inventory("{before_switch: [[manage, migrate]]}"), V1)
    assert len(_one_offs(fakes["h1"])) == 1, "nothing to switch: the hook does not run again"


def test_a_failing_before_switch_stops_the_rollout_with_nothing_switched_and_its_output() -> None:
    fakes = {name: FakeHost(name, healthy={"v1", "v2"}) for name in ("h1", "h2")}
    _rollout(fakes, _inventory("{}"), V1)
    fakes["h1"].stream_status = 4
    fakes["h1"].stream_output = b"line 1\nboom: no such table\n"
    error, _ = _rollout(fakes, _inventory("{before_switch: ['migrate', [never, runs]]}"), V2)
    assert isinstance(error, RolloutError) and error.exit_code == 7
    assert error.message == (
        "before_switch: sh -c migrate exited 4 on h1; nothing was switched\n  | line 1\n  | boom: no such table"
    )
    assert {fake.serving() for fake in fakes.values()} == {"v1"}
    assert all(c.state != "running" for f in fakes.values() for c in f.containers.values() if c.release == "v2")
    assert len(_one_offs(fakes["h1"])) == 1, "the second command never ran"
    assert error.report is not None
    assert [(h.host, h.outcome, h.serving) for h in error.report.hosts] == [("h1", "failed", "v1"), ("h2", "untouched", "v1")]
    assert '"result": "exit 4"' in fakes["h1"].history[-1]


def test_a_swarm_cluster_refuses_before_switch() -> None:
    from deployer.targets.swarm import refuse_hooks

    with pytest.raises(UsageError, match="a Swarm cluster does not run it"):
        refuse_hooks(_inventory("{before_switch: [x]}").app)
    refuse_hooks(_inventory("{}").app)


# ---------------------------------------------------------------- local after hooks


def _secret_inventory(hooks_yaml: str, base: Path) -> config.Inventory:
    inv = config.parse(
        "app:\n  name: web\n  image: r/web\n"
        "  registry: {server: r, username: u, password_env: REG_PW}\n"
        "  container: {secrets: [DATABASE_URL]}\n"
        f"  hooks: {hooks_yaml}\n"
        "hosts: {prod: [h1, h2]}\n",
        base / "inventory.yaml",
    )
    return inv


def test_the_hooks_environment_has_the_outcome_and_no_secret(tmp_path: Path) -> None:
    inv = _secret_inventory("{}", tmp_path)
    ended = hooks.Ended("rollout", ["h1", "h2"], "v2")
    ended.outcome, ended.exit_code, ended.message = "failed", 7, "health check failed"
    env = hooks.environment(
        inv, ended, {"PATH": "/bin", "DATABASE_URL": "pg://x", "REG_PW": "pw", "COPY": "pg://x", "HOME": "/h"}
    )
    assert env == {
        "PATH": "/bin",
        "HOME": "/h",
        "DEPLOY_APP": "web",
        "DEPLOY_ACTION": "rollout",
        "DEPLOY_RELEASE": "v2",
        "DEPLOY_OUTCOME": "failed",
        "DEPLOY_EXIT_CODE": "7",
        "DEPLOY_HOSTS": "h1,h2",
        "DEPLOY_MESSAGE": "health check failed",
    }


def test_after_hooks_run_in_order_and_failures_only_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen"
    monkeypatch.setenv("DATABASE_URL", "pg://s3cret")
    monkeypatch.setenv("REG_PW", "registry-pw")
    inv = _secret_inventory(
        f"{{after: ['env > {seen}', [sh, -c, 'exit 3'], [/nonexistent/x], 'sleep 30'], "
        "after_timeout: 2}",
        tmp_path,
    )
    err = io.StringIO()
    out = Output(stdout=io.StringIO(), stderr=err)
    started = time.monotonic()
    with pytest.raises(RolloutError), hooks.after(inv, out, hooks.Ended("rollback", ["h1"], "v1")):
        raise RolloutError("rollback of v1 failed on 1 host(s)")
    assert time.monotonic() - started < 20, "the sleeping hook was stopped at its timeout"
    env = seen.read_text()
    assert "DEPLOY_ACTION=rollback" in env and "DEPLOY_OUTCOME=failed" in env and "DEPLOY_EXIT_CODE=7" in env
    assert "s3cret" not in env and "registry-pw" not in env and "DATABASE_URL" not in env
    warnings = err.getvalue()
    assert "exited 3; the run's exit code is unchanged" in warnings
    assert "after hook /nonexistent/x could not start" in warnings
    assert "after hook sh -c 'sleep 30' did not finish within 2 s; stopped" in warnings


def test_after_hooks_hear_ok_partial_and_interrupted(tmp_path: Path) -> None:
    inv = _secret_inventory("{}", tmp_path)
    out = Output(stdout=io.StringIO(), stderr=io.StringIO())
    with hooks.after(inv, out, hooks.Ended("rollout", ["h1"])) as ended:
        pass
    assert (ended.outcome, ended.exit_code) == ("ok", 0)
    with hooks.after(inv, out, hooks.Ended("rollout", ["h1"])) as ended:
        ended.every_host_ok = False
    assert ended.outcome == "partial"
    with pytest.raises(Interrupted), hooks.after(inv, out, hooks.Ended("rollout", ["h1"])) as ended:
        raise Interrupted("rollout interrupted")
    assert (ended.outcome, ended.exit_code) == ("interrupted", 130)


# ---------------------------------------------------------------- run and exec on scripted hosts


def _session(fakes: dict[str, FakeHost], inv: config.Inventory) -> Iterator[fleet_module.Fleet]:
    return fleet_module.open_fleet(  # type: ignore[return-value]
        inv,
        [inventory.Host(name, name, 22, "root") for name in fakes],
        connect=lambda host: fakes[host.name],
        out=Output(verbosity=-1, stdout=io.StringIO(), stderr=io.StringIO()),
        cancel=threading.Event(),
    )


def test_run_uses_the_serving_release_or_pulls_the_tag_and_records_the_exit() -> None:
    fakes = {"h1": FakeHost("h1", healthy={"v1"})}
    _rollout(fakes, _inventory("{}"), V1)
    fakes["h1"].stream_status = 3
    with _session(fakes, _inventory("{}")) as fleet:
        host = fleet.hosts[0]
        assert operate.run(fleet, host, ["rake", "db:seed"], {}, release=None, password=None) == 3
        assert operate.run(fleet, host, ["true"], {}, release=V2, password=None) == 3
    first, second = _one_offs(fakes["h1"])
    assert first.argv[-3:] == ("rake", "r/web@sha256:1", "db:seed")
    assert second.argv[-2:] == ("true", "r/web@sha256:2")
    assert [c.purpose for c in fakes["h1"].log].count("docker pull") == 2, "v1 for the rollout, v2 for run --tag"
    assert '"action": "run"' in fakes["h1"].history[-2] and '"result": "exit 3"' in fakes["h1"].history[-2]
    assert '"command": "rake db:seed"' in fakes["h1"].history[-2] and '"release": "v2"' in fakes["h1"].history[-1]


def test_run_refuses_a_host_that_serves_nothing_without_a_tag() -> None:
    fakes = {"h1": FakeHost("h1")}
    with _session(fakes, _inventory("{}")) as fleet, pytest.raises(UsageError, match="no release of web runs here"):
        operate.run(fleet, fleet.hosts[0], ["true"], {}, release=None, password=None)


class _Stopped(FakeHost):
    def stream(self, command: commands.RemoteCommand, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        self.log.append(command)
        raise Interrupted(f"{self.name}: docker run stopped")


def test_a_stopped_run_removes_its_container_and_says_interrupted() -> None:
    fakes: dict[str, FakeHost] = {"h1": _Stopped("h1", healthy={"v1"})}
    _rollout(fakes, _inventory("{}"), V1)
    with _session(fakes, _inventory("{}")) as fleet, pytest.raises(Interrupted, match="h1: run interrupted"):
        operate.run(fleet, fleet.hosts[0], ["sleep", "60"], {}, release=None, password=None)
    name = _one_offs(fakes["h1"])[0].argv[4]
    assert name.startswith("web-run-")
    assert fakes["h1"].log[-2].argv == ("docker", "container", "rm", "--force", name)
    assert '"result": "interrupted"' in fakes["h1"].history[-1]


def test_exec_on_every_host_prefixes_lines_and_returns_the_worst_exit() -> None:
    fakes = {name: FakeHost(name, healthy={"v1"}) for name in ("h1", "h2")}
    _rollout(fakes, _inventory("{}"), V1)
    fakes["h1"].stream_output, fakes["h2"].stream_output = b"one\n", b"two\npartial"
    fakes["h2"].stream_status = 2
    with _session(fakes, _inventory("{}")) as fleet:
        assert operate.exec_all(fleet, ["cat", "/VERSION"]) == 2
        out = fleet.out.stdout.getvalue()  # type: ignore[attr-defined]
    assert sorted(out.splitlines()) == ["h1 | one", "h2 | partial", "h2 | two"]
    assert fakes["h1"].log[-1].argv == ("docker", "container", "exec", "web-v1", "cat", "/VERSION")


def test_exec_refuses_hosts_that_run_no_container_before_running_anything() -> None:
    fakes = {name: FakeHost(name, healthy={"v1"}) for name in ("h1", "h2")}
    _rollout({"h1": fakes["h1"]}, _inventory("{}"), V1)
    with _session(fakes, _inventory("{}")) as fleet, pytest.raises(UsageError, match="runs on h2; nothing was run"):
        operate.exec_all(fleet, ["true"])
    assert all(c.purpose != "docker exec" for f in fakes.values() for c in f.log)


# ---------------------------------------------------------------- the command line


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    from .entrypoint import run

    path = tmp_path / "inventory.yaml"
    path.write_text(
        "app: {name: web, image: r/web}\n"
        "ssh: {config_file: /nonexistent, connect_timeout: 0.01}\n"
        "hosts: {prod: [192.0.2.1, 192.0.2.2], cluster: {swarm: {manager: 192.0.2.3}}}\n"
    )
    return run(monkeypatch, capsys, "-i", str(path), *args)


def test_exec_it_on_several_hosts_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _cli(monkeypatch, capsys, tmp_path, "exec", "--hosts", "prod", "-it", "--", "sh")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "error: exec -it opens a terminal on one host, and --hosts prod selects 2",
        "  hint: name the host with --host",
    ]


@pytest.mark.parametrize("verb", ["run", "exec"])
def test_run_and_exec_refuse_a_swarm_cluster(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, verb: str
) -> None:
    code, _, err = _cli(monkeypatch, capsys, tmp_path, verb, "--hosts", "cluster", "--", "true")
    assert code == 2
    assert err.splitlines()[0].startswith(f"error: deploy {verb} works on plain hosts, and --hosts selects Swarm")


def test_host_must_be_one_of_the_selected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _cli(monkeypatch, capsys, tmp_path, "run", "--hosts", "prod", "--host", "192.0.2.9", "--", "true")
    assert code == 2
    assert err.splitlines()[0] == "error: --host 192.0.2.9 is not one of the hosts --hosts prod selects"


def test_command_words_after_the_separator_are_not_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _cli(monkeypatch, capsys, tmp_path, "logs", "--hosts", "prod", "--since", "yesterday")
    assert code == 2 and "error: --since 'yesterday' is neither a duration nor a time" in err


def test_the_dry_run_shows_the_hook_once_after_the_pull_on_the_first_host() -> None:
    fakes = {name: FakeHost(name) for name in ("h1", "h2")}
    with _session(fakes, _inventory("{before_switch: [[manage, migrate]]}")) as fleet:
        plans = PlainHosts().rollout_plan(fleet, V1, password=None, secrets={})
    assert plans["h1"][0].startswith("sh -c") and "docker pull" not in plans["h1"][1]
    assert plans["h1"][1] == (
        "# before_switch, once: docker run --rm --name web-run-ID --label deployer.one-off=web "
        "--entrypoint manage r/web@sha256:1 migrate"
    )
    assert not any("before_switch" in line for line in plans["h2"])


def test_the_dry_run_of_a_release_every_host_serves_tags_it_and_runs_no_hook() -> None:
    fakes = {name: FakeHost(name, containers={"web-v1": FakeContainer("web-v1", "v1", "sha256:1", "running")})
             for name in ("h1", "h2")}
    with _session(fakes, _inventory("{before_switch: [[manage, migrate]]}")) as fleet:
        plans = PlainHosts().rollout_plan(fleet, V1, password=None, secrets={})
    assert plans == {
        name: ["docker image tag r/web@sha256:1 r/web:v1", "# already serving v1: nothing to switch"]
        for name in ("h1", "h2")
    }


def test_run_tag_without_a_registry_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from .entrypoint import run

    path = tmp_path / "inventory.yaml"
    path.write_text(
        "app: {name: web, image: acme/web, registry: false}\n"
        "ssh: {config_file: /nonexistent, connect_timeout: 0.01}\n"
        "hosts: {prod: [192.0.2.1]}\n"
    )
    code, _, err = run(monkeypatch, capsys, "-i", str(path), "run", "--hosts", "prod", "--tag", "0123456789ab", "--", "true")
    assert code == 2
    assert "run --tag pulls the release from the registry, and app.registry is false; nothing was run" in err


class _Overdue(FakeHost):
    def stream(self, command: commands.RemoteCommand, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        self.log.append(command)
        self.deadline = kwargs.get("timeout")
        raise CommandError(f"{self.name}: docker run did not finish within 5 s; stopped")


def test_a_run_past_its_timeout_is_stopped_removed_and_recorded() -> None:
    fakes: dict[str, FakeHost] = {"h1": _Overdue("h1", healthy={"v1"})}
    _rollout(fakes, _inventory("{}"), V1)
    with _session(fakes, _inventory("{}")) as fleet, pytest.raises(CommandError) as caught:
        operate.run(fleet, fleet.hosts[0], ["sleep", "60"], {}, release=None, password=None, timeout=5)
    assert caught.value.message == "h1: docker run did not finish within 5 s; stopped; its container was removed"
    assert caught.value.hint == "give it longer with --timeout"
    assert fakes["h1"].deadline == 5  # type: ignore[attr-defined]
    name = _one_offs(fakes["h1"])[0].argv[4]
    assert fakes["h1"].log[-2].argv == ("docker", "container", "rm", "--force", name)
    assert '"result": "timeout"' in fakes["h1"].history[-1]
