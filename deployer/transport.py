"""Run :class:`~deployer.commands.RemoteCommand` values on a host over one SSH connection.

This is the only module that talks to paramiko; its errors are translated here into
:class:`~deployer.errors.ConnectError`, :class:`~deployer.errors.HostKeyError` and
:class:`~deployer.errors.CommandError`. Host keys are checked against known_hosts files and
unknown keys are refused unless the run was explicitly allowed to add them.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paramiko

from deployer.commands import RemoteCommand
from deployer.errors import CommandError, ConnectError, HostKeyError
from deployer.inventory import Host

USER_KNOWN_HOSTS = "~/.ssh/known_hosts"

# paramiko logs connection failures with tracebacks from its own threads; they are reported
# here as one translated error instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


@dataclass(frozen=True)
class CommandResult:
    """What a command printed and how it exited."""

    status: int
    stdout: str
    stderr: str

    def reason(self) -> str:
        """The command's own words for a failure: the last line of stderr, else of stdout."""
        for text in (self.stderr, self.stdout):
            lines = [line for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return f"exit status {self.status}"


class Transport(Protocol):
    """Runs commands on one host. The SSH transport and the test transports share it."""

    def run(self, command: RemoteCommand, timeout: float | None = None) -> CommandResult:
        """Run *command*; raise CommandError if it fails or passes its deadline."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


@dataclass(frozen=True)
class SSHOptions:
    """How to connect: host key files, deadlines, and whether unknown keys may be added."""

    known_hosts: tuple[Path, ...] = (Path(USER_KNOWN_HOSTS).expanduser(),)
    accept_new_host_keys: bool = False
    connect_timeout: float = 10
    command_timeout: float = 300
    on_new_key: Callable[[str], None] = field(default=lambda message: None)


def _tcp(hostname: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with Nagle's algorithm off: each command's small packets leave at once
    instead of waiting for the peer's delayed ACK (about 40 ms per command round trip)."""
    sock = socket.create_connection((hostname, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint if hasattr(key, "fingerprint") else key.get_name()


def _known_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


class SSHTransport:
    """One paramiko connection to one host, reused for every command of a run."""

    def __init__(self, host: Host, options: SSHOptions, *, jump: SSHTransport | None = None) -> None:
        self.host = host
        self.options = options
        self._jump = jump
        self.client = paramiko.SSHClient()
        for path in options.known_hosts:
            if path.exists():
                try:
                    self.client.load_host_keys(str(path))
                except (OSError, paramiko.SSHException) as exc:
                    raise ConnectError(f"{path}: cannot read known_hosts: {exc}") from exc
        self.client.set_missing_host_key_policy(_MissingKeyPolicy(host, options))
        self._connect()

    def _connect(self) -> None:
        host, options = self.host, self.options
        sock = None
        if self._jump is not None:
            try:
                sock = self._jump.client.get_transport().open_channel(  # type: ignore[union-attr]
                    "direct-tcpip",
                    (host.hostname, host.port),
                    ("127.0.0.1", 0),
                    timeout=options.connect_timeout,
                )
            except (paramiko.SSHException, OSError) as exc:
                raise ConnectError(f"{host}: cannot reach it through {host.proxy_jump}: {exc}") from exc
        try:
            if sock is None:
                sock = _tcp(host.hostname, host.port, options.connect_timeout)
            self.client.connect(
                host.hostname,
                port=host.port,
                username=host.user,
                key_filename=list(host.identity_files) or None,  # type: ignore[arg-type]
                timeout=options.connect_timeout,
                banner_timeout=options.connect_timeout,
                auth_timeout=options.connect_timeout,
                allow_agent=True,
                look_for_keys=not host.identity_files,
                sock=sock,
            )
        except HostKeyError:
            self.client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            self.client.close()
            name = _known_name(host.hostname, host.port)
            raise HostKeyError(
                f"{host}: HOST KEY CHANGED: known_hosts has {_fingerprint(exc.expected_key)}, "
                f"the host offered {_fingerprint(exc.key)}; refusing to connect",
                hint=f"if the host was really reinstalled, remove the old key: ssh-keygen -R '{name}' "
                "and verify the new one before trusting it",
            ) from exc
        except paramiko.AuthenticationException as exc:
            self.client.close()
            raise ConnectError(
                f"{host}: login as {host.user} refused: {exc}",
                hint="check ssh.user, ssh.identity_file, or the keys in your ssh-agent",
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.client.close()
            if "No authentication methods available" in str(exc):
                raise ConnectError(
                    f"{host}: no SSH key to log in as {host.user} with",
                    hint="set ssh.identity_file, or add a key to ssh-agent (ssh-add)",
                ) from exc
            reason = (
                "timed out"
                if isinstance(exc, socket.timeout | TimeoutError)
                else str(exc) or type(exc).__name__
            )
            raise ConnectError(f"{host}: cannot connect to {host.hostname}:{host.port}: {reason}") from exc
        transport = self.client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)

    def run(self, command: RemoteCommand, timeout: float | None = None) -> CommandResult:
        """Run *command*, feeding its stdin and reading both streams until it exits."""
        deadline = time.monotonic() + (timeout or self.options.command_timeout)
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"{self.host}: connection lost")
        try:
            channel = transport.open_session(timeout=self.options.connect_timeout)
            try:
                return self._exchange(channel, command, deadline)
            finally:
                channel.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc

    def _exchange(self, channel: paramiko.Channel, command: RemoteCommand, deadline: float) -> CommandResult:
        channel.exec_command(command.render())
        if command.stdin:
            channel.sendall(command.stdin)
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.eof_received:
                break
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._overdue(command)
                select.select([channel], [], [], min(remaining, 1.0))
        if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise self._overdue(command)
        result = CommandResult(
            channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
        )
        if result.status not in command.ok_statuses:
            raise CommandError(f"{self.host}: {command.describe()} failed: {result.reason()}")
        return result

    def _overdue(self, command: RemoteCommand) -> CommandError:
        return CommandError(f"{self.host}: {command.describe()} did not finish in time; gave up waiting")

    def close(self) -> None:
        """Close the connection (and the jump host's, if any)."""
        self.client.close()
        if self._jump is not None:
            self._jump.close()


class _MissingKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys with the way to trust them; add them only when allowed."""

    def __init__(self, host: Host, options: SSHOptions) -> None:
        self.host = host
        self.options = options

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        name = _known_name(self.host.hostname, self.host.port)
        target = (
            self.options.known_hosts[-1] if self.options.known_hosts else Path(USER_KNOWN_HOSTS).expanduser()
        )
        if not self.options.accept_new_host_keys:
            raise HostKeyError(
                f"{self.host}: host key not known ({key.get_name()} {_fingerprint(key)}); refusing to connect",
                hint=f"verify the fingerprint with the host's owner, then add it: "
                f"ssh-keyscan -p {self.host.port} {self.host.hostname} >> {target}, "
                "or run again with --accept-new-host-keys",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as known:
            known.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(name, key.get_name(), key)
        self.options.on_new_key(f"{self.host}: added {key.get_name()} {_fingerprint(key)} to {target}")


def connect(
    host: Host, options: SSHOptions, hosts_by_alias: Callable[[str], Host] | None = None
) -> SSHTransport:
    """Open the connection to *host*, through its ProxyJump host first if it has one."""
    jump = None
    if host.proxy_jump:
        if hosts_by_alias is None:
            raise ConnectError(f"{host}: ProxyJump {host.proxy_jump} cannot be resolved")
        jump = connect(hosts_by_alias(host.proxy_jump.split(",")[0]), options, hosts_by_alias)
    return SSHTransport(host, options, jump=jump)
