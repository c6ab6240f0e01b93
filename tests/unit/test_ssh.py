"""The SSH side: deadlines on every wait (against a fake SSH server), known_hosts files that
paramiko cannot read as is, ProxyJump chains and loops, and the bounds of the ssh section."""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import paramiko.util
import pytest
from pydantic import SecretStr

from deployer import commands, config, inventory, state, transport
from deployer.errors import CommandError, ConfigError, ConnectError, HostKeyError, Interrupted
from deployer.targets import swarm_service

from .fakessh import FakeSSHServer, client_key

T = TypeVar("T")

INSPECT = commands.inspect("web-v1")


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def servers() -> Iterator[Callable[[str], FakeSSHServer]]:
    started: list[FakeSSHServer] = []

    def start(behaviour: str) -> FakeSSHServer:
        started.append(FakeSSHServer(behaviour))
        return started[-1]

    yield start
    for server in started:
        server.close()


def _ends(call: Callable[[], T]) -> T:
    """Run *call*, failing the test if it is still waiting long after every deadline used here."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "still waiting: this wait has no deadline"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _connect(server: FakeSSHServer, tmp_path: Path, known: str | bytes | None = None, **options: object) -> transport.SSHTransport:
    known_hosts = tmp_path / "known_hosts"
    text = server.known_hosts_line() if known is None else known
    known_hosts.write_bytes(text.encode() if isinstance(text, str) else text)
    host = inventory.Host("fake", "127.0.0.1", server.port, "deploy", (str(client_key(tmp_path)),))
    return _ends(lambda: transport.SSHTransport(host, transport.SSHOptions(known_hosts=(known_hosts,), **options)))  # type: ignore[arg-type]


# ---------------------------------------------------------------- deadlines


def test_a_command_runs_and_its_stdin_arrives(servers: Callable[[str], FakeSSHServer], tmp_path: Path) -> None:
    ssh = _connect(servers("ok"), tmp_path)
    result = ssh.run(commands.RemoteCommand(("cat",), stdin=b"input"))
    assert result.stdout == "cat\ninput"
    ssh.close()


def test_a_command_the_host_accepts_and_never_answers_ends_at_its_deadline(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    ssh = _connect(servers("hang"), tmp_path, command_timeout=0.3)
    with pytest.raises(CommandError) as caught:
        _ends(lambda: ssh.run(INSPECT))
    assert caught.value.message == "fake: docker container inspect did not finish in time (0.3 s); gave up waiting"
    assert caught.value.hint is not None and "ssh.command_timeout" in caught.value.hint


def test_a_command_that_never_reads_its_stdin_ends_at_its_deadline(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    ssh = _connect(servers("deaf"), tmp_path, command_timeout=0.3)
    with pytest.raises(CommandError) as caught:
        _ends(lambda: ssh.run(commands.RemoteCommand(("cat",), stdin=b"x" * 8_000_000, purpose="record history")))
    assert caught.value.message == "fake: record history did not finish in time (0.3 s); gave up waiting"


@pytest.mark.parametrize("behaviour", ["silent", "no-session"])
def test_a_host_that_never_answers_the_request_is_given_up_and_its_connection_closed(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path, behaviour: str
) -> None:
    server = servers(behaviour)
    ssh = _connect(server, tmp_path, connect_timeout=0.5)
    with pytest.raises(ConnectError) as caught:
        _ends(lambda: ssh.run(INSPECT))
    assert caught.value.message == (
        "fake: the host did not answer the request to run docker container inspect within 0.5 s; connection closed"
    )
    with pytest.raises(ConnectError) as again:
        _ends(lambda: ssh.run(INSPECT))
    assert again.value.message == "fake: connection lost"
    assert len(server.commands) == (1 if behaviour == "silent" else 0)


def _pull() -> commands.RemoteCommand:
    return commands.pull("r/web@sha256:ab", "r/web:v1", login=commands.Login("u", "r", SecretStr("pw")))


def test_a_pull_in_progress_is_abandoned_when_the_run_stops(servers: Callable[[str], FakeSSHServer], tmp_path: Path) -> None:
    cancel = threading.Event()
    ssh = _connect(servers("hang"), tmp_path, command_timeout=0.3, pull_timeout=600, cancel=cancel)
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(Interrupted) as caught:
        _ends(lambda: ssh.run(_pull()))
    assert caught.value.message == "fake: docker pull abandoned: the run was interrupted"


def test_each_line_of_a_pull_is_heard_while_the_pull_still_runs(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    server = servers("drip")
    ssh = _connect(server, tmp_path)
    heard: list[str] = []

    def on_line(line: str) -> None:
        heard.append(line)
        if line == "first line":
            server.heard.set()
        else:
            server.finish.set()

    result = _ends(lambda: ssh.run(_pull(), on_line=on_line))
    assert heard == ["first line", "the client had read it", "no line ending"]
    assert result.stdout == "first line\nthe client had read it\nno line ending"


def test_a_streamed_pull_keeps_its_deadline_and_is_abandoned_when_the_run_stops(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    heard: list[str] = []
    ssh = _connect(servers("drip"), tmp_path, pull_timeout=0.5)
    with pytest.raises(CommandError, match=r"^fake: docker pull did not finish in time \(0.5 s\)"):
        _ends(lambda: ssh.run(_pull(), on_line=heard.append))
    assert heard[0] == "first line"
    cancel = threading.Event()
    ssh = _connect(servers("drip"), tmp_path, pull_timeout=600, cancel=cancel)
    with pytest.raises(Interrupted, match="docker pull abandoned"):
        _ends(lambda: ssh.run(_pull(), on_line=lambda line: cancel.set()))


def test_a_command_that_changes_a_host_is_not_abandoned_when_the_run_stops(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    cancel = threading.Event()
    cancel.set()
    ssh = _connect(servers("hang"), tmp_path, command_timeout=0.3, cancel=cancel)
    with pytest.raises(CommandError, match="did not finish in time"):
        _ends(lambda: ssh.run(commands.start("web-v1")))


def test_deadlines_by_kind_of_command() -> None:
    options = transport.SSHOptions(command_timeout=30, pull_timeout=600)
    app = config.App(name="web", image="r/web")
    swarm = config.Swarm(manager=config.HostSpec(address="m"))
    password = SecretStr("pw")
    short = [
        state.read_state(app),
        state.acquire_lock(app, b"{}"),
        state.append_history(app, b"{}"),
        commands.inspect("web-v1"),
        commands.start("web-v1"),
        commands.remove_containers(["web-v0"]),
        swarm_service.read_swarm(app),
    ]
    assert [transport.deadline_of(command, options) for command in short] == [30] * len(short)
    assert transport.deadline_of(commands.stop("web-v1", 45), options) == 75
    slow = [
        _pull(),
        commands.pull("r/web@sha256:ab", "r/web:v1", login=None),
        swarm_service.create_service(
            app, swarm, "v1", "r/web@sha256:ab", "sha256:ab", {}, login=commands.Login("u", "r", password)
        ),
        swarm_service.update_service(
            app, swarm, "v1", "r/web@sha256:ab", "sha256:ab", swarm_service.ServiceChanges(), login=None
        ),
    ]
    assert [transport.deadline_of(command, options) for command in slow] == [600] * len(slow)
    assert [command.interruptible for command in slow] == [True, True, False, False], "only pulls change nothing but images"


# ---------------------------------------------------------------- known_hosts

CA_LINE = "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"


def test_known_hosts_lines_paramiko_cannot_use_are_skipped(servers: Callable[[str], FakeSSHServer], tmp_path: Path) -> None:
    server = servers("ok")
    other = FakeSSHServer("ok")
    other.close()
    known = (
        "# comment\n"
        + CA_LINE
        + f"@revoked * {other.host_key.get_name()} {other.host_key.get_base64()}\n"
        + "damaged ssh-ed25519 AAAA\n"
        + "short ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQE=\n"
        + "unknown sk-ssh-ed25519@openssh.com AAAA\n"
        + "too few\n"
        + server.known_hosts_line()
    )
    ssh = _connect(server, tmp_path, known)
    assert ssh.run(commands.RemoteCommand(("true",))).stdout == "true\n"
    ssh.close()


def test_a_known_hosts_file_that_is_not_utf8_is_named(servers: Callable[[str], FakeSSHServer], tmp_path: Path) -> None:
    server = servers("ok")
    with pytest.raises(ConnectError) as caught:
        _connect(server, tmp_path, b"# caf\xe9\n" + server.known_hosts_line().encode())
    assert caught.value.message == f"{tmp_path / 'known_hosts'}: cannot read known_hosts: line 1 is not UTF-8 text"


@pytest.mark.parametrize("separator", [" ", "\t"])
def test_a_revoked_key_is_refused_even_where_listed(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path, separator: str
) -> None:
    server = servers("ok")
    line = server.known_hosts_line()
    revoked = separator.join(["@revoked", "*", *line.split(" ")[1:]])
    with pytest.raises(HostKeyError) as caught:
        _connect(server, tmp_path, line + revoked, accept_new_host_keys=True)
    assert "known_hosts marks @revoked" in caught.value.message
    assert (tmp_path / "known_hosts").read_text().count("\n") == 2, "the revoked key was not recorded"


# ---------------------------------------------------------------- the SSH client config and ProxyJump

SSH_CONFIG = """\
Host target
  ProxyJump a,b
Host a
  HostName 10.0.0.1
  ProxyJump deploy@z:2222
Host b
  ProxyJump ignored
Host direct
  ProxyJump none
Host loop1
  ProxyJump loop2
Host loop2
  ProxyJump loop1
Host self
  ProxyJump self
Host badport
  Port eighty
"""


def _inventory(tmp_path: Path, config_text: str | bytes = SSH_CONFIG) -> config.Inventory:
    path = tmp_path / "ssh_config"
    path.write_bytes(config_text.encode() if isinstance(config_text, str) else config_text)
    text = f"app: {{name: web, image: r/web}}\nssh: {{config_file: {path}}}\nhosts: {{all_hosts: [target, direct, loop1, self, badport]}}\n"
    return config.parse(text, tmp_path / "inventory.yaml")


def _route(inv: config.Inventory, name: str) -> list[str]:
    lookup = transport.ssh_config(inv)
    (host,) = inventory.select(inv, name, lookup)
    hops = transport.route(host, lambda spec: inventory.resolve(inv, inventory.parse_jump(spec), lookup))
    return [f"{hop.user}@{hop.hostname}:{hop.port}" if hop.name != name else hop.name for hop in hops]


def test_a_proxy_jump_chain_goes_through_every_hop_in_order(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    user = inventory.resolve(inv, inventory.parse_jump("x"), inventory.no_ssh_config).user
    assert _route(inv, "target") == ["deploy@z:2222", f"{user}@10.0.0.1:22", f"{user}@b:22", "target"]
    assert _route(inv, "direct") == ["direct"]


@pytest.mark.parametrize(("name", "loop"), [("loop1", "loop1 via loop2 via loop1"), ("self", "self via self")])
def test_a_proxy_jump_loop_is_refused(tmp_path: Path, name: str, loop: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _route(_inventory(tmp_path), name)
    assert caught.value.message == f"{name}: ProxyJump goes round in a loop: {loop}"


def test_proxy_jump_entries() -> None:
    assert inventory.parse_jump("ssh://bastion@jump:2222").model_dump() == {"address": "jump", "port": 2222, "user": "bastion"}
    assert inventory.parse_jump("[2001:db8::1]:2222").model_dump() == {"address": "2001:db8::1", "port": 2222, "user": None}
    for bad in ("user@", "jump:port", "jump:99999"):
        with pytest.raises(ConfigError, match="is not \\[user@\\]host\\[:port\\]"):
            inventory.parse_jump(bad)


def test_ssh_config_mistakes_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as port:
        inventory.select(_inventory(tmp_path), "badport", transport.ssh_config(_inventory(tmp_path)))
    assert port.value.message == "badport: the SSH config gives port 'eighty', not a number from 1 to 65535"
    with pytest.raises(ConfigError) as encoding:
        transport.ssh_config(_inventory(tmp_path, b"Host caf\xe9\n  User x\n"))
    assert encoding.value.message.startswith(f"{tmp_path / 'ssh_config'}: cannot read the SSH client config: ")


# ---------------------------------------------------------------- the ssh section


def test_ssh_deadlines_default_short_for_commands_and_long_for_pulls() -> None:
    ssh = config.SSH()
    assert (ssh.connect_timeout, ssh.command_timeout, ssh.pull_timeout) == (10, 30, 600)


@pytest.mark.parametrize("key", ["connect_timeout", "command_timeout", "pull_timeout", "parallel"])
@pytest.mark.parametrize("value", ["1e300", ".inf", "100000000"])
def test_every_number_of_the_ssh_section_is_bounded(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(f"app: {{name: web, image: r/web}}\nssh: {{{key}: {value}}}\nhosts: {{p: [a]}}\n", Path("inv.yaml"))
    assert caught.value.message.startswith(f"inv.yaml:2: ssh.{key}: ")


# ---------------------------------------------------------------- the forward on the SSH connection


def _answering_once(reply: bytes) -> tuple[int, list[bytes]]:
    """A TCP server on this machine's loopback that answers one connection's first bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    heard: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            heard.append(conn.recv(100))
            conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], heard


def test_the_forward_pipes_each_connection_of_the_host_to_this_machine_and_ends_with_the_block(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    server = servers("ok")
    ssh = _connect(server, tmp_path)
    port, heard = _answering_once(b"HTTP/1.1 200 OK\r\n\r\n")
    with ssh.forward(port) as remote:
        assert remote == FakeSSHServer.FORWARD_PORT
        assert server.forwards == [("127.0.0.1", 0)], "bound to the host's loopback, on a port it picks"
        channel = server.connect_forwarded()
        channel.sendall(b"GET /v2/ HTTP/1.1\r\n\r\n")
        channel.settimeout(5)
        assert channel.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert heard == [b"GET /v2/ HTTP/1.1\r\n\r\n"]
    assert server.cancelled == [("127.0.0.1", FakeSSHServer.FORWARD_PORT)]
    assert channel.recv(100) == b"", "the host's connection ends with the block"
    assert not [t for t in threading.enumerate() if t.name == "deploy-forward"], "no piping thread is left"
    ssh.close()


def test_a_refused_forward_says_what_the_host_must_allow(servers: Callable[[str], FakeSSHServer], tmp_path: Path) -> None:
    ssh = _connect(servers("no-forward"), tmp_path)
    with pytest.raises(ConnectError) as caught, ssh.forward(5000):
        pass
    assert "the host refused to forward a port to this machine" in caught.value.message
    assert caught.value.hint is not None and "AllowTcpForwarding" in caught.value.hint
    ssh.close()


def test_a_forward_the_host_never_answers_ends_at_its_deadline(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    ssh = _connect(servers("silent"), tmp_path, connect_timeout=0.5)

    def ask() -> None:
        with ssh.forward(5000):
            pass

    with pytest.raises(ConnectError, match=r"did not answer the request to forward a port to this machine within 0\.5 s"):
        _ends(ask)



def test_each_packet_is_checked_with_the_standard_librarys_constant_time_comparison(
    servers: Callable[[str], FakeSSHServer], tmp_path: Path
) -> None:
    assert paramiko.util.constant_time_bytes_eq is hmac.compare_digest, "paramiko's is a byte-by-byte Python loop"
    ssh = _connect(servers("ok"), tmp_path)
    assert ssh.run(commands.RemoteCommand(("cat",), stdin=b"x" * 100_000)).stdout == "cat\n" + "x" * 100_000, (
        "every packet's MAC still matches"
    )
    ssh.close()
