"""Everything SSH: reach hosts and run :class:`~deployer.commands.RemoteCommand` values on them.

This is the only module that imports paramiko. It reads the OpenSSH client config and the
known_hosts files, follows ProxyJump chains, and translates paramiko's errors into
:class:`~deployer.errors.ConnectError`, :class:`~deployer.errors.HostKeyError` and
:class:`~deployer.errors.CommandError`. Host keys are checked against known_hosts files and
unknown keys are refused unless the run was explicitly allowed to add them.

Every wait on a host has a deadline: connecting and opening a session ``ssh.connect_timeout``,
a command ``ssh.command_timeout`` (plus the seconds it waits on purpose, such as ``docker stop
--time``), a pull ``ssh.pull_timeout``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paramiko
import paramiko.util
from paramiko.hostkeys import HostKeyEntry

from deployer.commands import RemoteCommand
from deployer.config import Inventory
from deployer.errors import CommandError, ConfigError, ConnectError, HostKeyError, Interrupted
from deployer.inventory import Host, SSHConfigEntry, SSHLookup, no_ssh_config, parse_jump, resolve

# paramiko checks each packet's MAC with a byte-by-byte loop in Python, about a sixth of the CPU
# a command costs; the standard library's compare_digest is the same constant-time comparison,
# in C.
paramiko.util.constant_time_bytes_eq = hmac.compare_digest  # type: ignore[assignment]  # overloads cover it

USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
#: hops a ProxyJump chain may have; more is surely a mistake in the SSH client config
MAX_JUMPS = 16

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


#: hears each line of a command's standard output as it arrives (without its line ending)
LineReader = Callable[[str], None]


class Transport(Protocol):
    """Runs commands on one host. The SSH transport and the test transports share it."""

    def run(
        self, command: RemoteCommand, timeout: float | None = None, *, on_line: LineReader | None = None
    ) -> CommandResult:
        """Run *command*; raise CommandError if it fails or passes its deadline. *on_line*, when
        given, hears each line of its stdout as it arrives, within the same deadline."""
        ...

    def stream(
        self,
        command: RemoteCommand,
        sink: Callable[[bytes, bool], None],
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        terminal: bool = False,
    ) -> int:
        """Run *command*, handing its output to *sink* as it comes; return its exit status."""
        ...

    def interactive(
        self, command: RemoteCommand, *, stdin_fd: int, stdout_fd: int, size: Callable[[], tuple[int, int]], term: str
    ) -> int:
        """Run *command* on a terminal wired to the local *stdin_fd* and *stdout_fd*; return its exit status."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...

    def forward(self, port: int) -> AbstractContextManager[int]:
        """Let the host reach port *port* of this machine's loopback for the length of the block,
        at the port of its own loopback the block is given."""
        ...


#: seconds between two looks at a stop request (or a new window size) while a stream waits
POLL = 0.2


class LineSplitter:
    """Bytes in, whole lines out: decoded (bad UTF-8 replaced), without their line end (a
    terminal's ``\\r\\n`` too). A partial line waits for its end, or for :meth:`flush`."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        """The lines *data* completes."""
        self._pending += data
        *lines, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        return [line.rstrip(b"\r").decode(errors="replace") for line in lines]

    def flush(self) -> list[str]:
        """The last line, when the output did not end with a line end."""
        rest, self._pending = bytes(self._pending), bytearray()
        return [rest.rstrip(b"\r").decode(errors="replace")] if rest.rstrip(b"\r") else []


@dataclass(frozen=True)
class SSHOptions:
    """How to connect: host key files, deadlines, and whether unknown keys may be added."""

    known_hosts: tuple[Path, ...] = (Path(USER_KNOWN_HOSTS).expanduser(),)
    accept_new_host_keys: bool = False
    connect_timeout: float = 10
    #: the deadline of every command but pulls
    command_timeout: float = 30
    #: the deadline of a pull (a command marked ``slow``)
    pull_timeout: float = 600
    on_new_key: Callable[[str], None] = field(default=lambda message: None)
    #: set when the run is stopping: an ``interruptible`` command is then abandoned
    cancel: threading.Event | None = field(default=None, compare=False)


# ---------------------------------------------------------------- the SSH client config


def ssh_config(inventory: Inventory) -> SSHLookup:
    """Look host names up in the OpenSSH client config named by `ssh.config_file` (none if absent)."""
    path = Path(inventory.ssh.config_file).expanduser()
    if not path.exists():
        return no_ssh_config
    try:
        parsed = paramiko.SSHConfig.from_path(str(path))
    except (OSError, ValueError, paramiko.ConfigParseError) as exc:  # ValueError: not UTF-8
        raise ConfigError(f"{path}: cannot read the SSH client config: {exc}") from exc

    def lookup(name: str) -> SSHConfigEntry:
        try:
            found = parsed.lookup(name)
        except (paramiko.SSHException, paramiko.ConfigParseError, ImportError, ValueError, KeyError) as exc:
            raise ConfigError(f"{path}: cannot look {name} up in the SSH client config: {exc}") from exc
        port = found.get("port")
        try:
            number = int(port) if port is not None else None
            if number is not None and not 1 <= number <= 65535:
                raise ValueError(port)
        except ValueError as exc:
            raise ConfigError(
                f"{name}: the SSH config gives port {port!r}, not a number from 1 to 65535"
            ) from exc
        jump = found.get("proxyjump")
        return SSHConfigEntry(
            hostname=found.get("hostname"),
            port=number,
            user=found.get("user"),
            identity_files=tuple(found.get("identityfile", [])),
            proxy_jump=None if jump is None or jump.strip().lower() == "none" else jump.strip(),
        )

    return lookup


def route(host: Host, jump_host: Callable[[str], Host]) -> list[Host]:
    """The hosts to connect through to reach *host*, first hop first, ending with *host* itself.

    As OpenSSH does: ``ProxyJump a,b`` reaches the target through ``b``, ``b`` through ``a``,
    and ``a`` through its own ProxyJump, if any. *jump_host* resolves one ProxyJump entry. A
    chain that comes back to a host already on it is refused.
    """

    def walk(target: Host, via: str | None, trail: tuple[Host, ...]) -> list[Host]:
        if any((h.hostname, h.port) == (target.hostname, target.port) for h in trail):
            loop = " via ".join(str(h) for h in (*trail, target))
            raise ConfigError(
                f"{trail[0]}: ProxyJump goes round in a loop: {loop}",
                hint="fix ProxyJump in the SSH client config (ssh.config_file)",
            )
        if len(trail) > MAX_JUMPS:
            raise ConfigError(f"{trail[0]}: ProxyJump chain longer than {MAX_JUMPS} hops")
        spec = target.proxy_jump if via is None else via
        hops = [hop.strip() for hop in (spec or "").split(",") if hop.strip()]
        if not hops:
            return [target]
        *before, last = hops
        return [*walk(jump_host(last), ",".join(before) if before else None, (*trail, target)), target]

    return walk(host, None, ())


# ---------------------------------------------------------------- known_hosts


@dataclass
class _KnownHosts:
    """The host keys of the known_hosts files, and the keys they mark as revoked."""

    entries: list[tuple[str, paramiko.PKey]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)

    def read(self, path: Path) -> None:
        """Add the keys of *path* (absent: none). Lines paramiko cannot use are skipped, as
        OpenSSH skips lines it cannot parse: ``@cert-authority`` (host certificates are not
        checked), unknown key types, damaged keys."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConnectError(f"{path}: cannot read known_hosts: {exc.strerror or exc}") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = data.count(b"\n", 0, exc.start) + 1
            raise ConnectError(
                f"{path}: cannot read known_hosts: line {where} is not UTF-8 text",
                hint="known_hosts lines are host names and base64 keys; fix or remove that line",
            ) from exc
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker = ""
            if line.startswith("@"):
                marker, _, line = line.replace("\t", " ").partition(" ")
                line = line.strip()
            try:
                entry = HostKeyEntry.from_line(line, number)
            except Exception:  # paramiko raises many kinds of errors for a damaged line
                continue
            if entry is None or entry.key is None:
                continue
            if marker == "@revoked":
                self.revoked.add(entry.key.get_base64())
            elif not marker:
                self.entries += [(name, entry.key) for name in entry.hostnames]

    def load_into(self, keys: paramiko.HostKeys) -> None:
        """Give *keys* every known key that is not revoked."""
        for name, key in self.entries:
            if key.get_base64() not in self.revoked:
                keys.add(name, key.get_name(), key)


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint if hasattr(key, "fingerprint") else key.get_name()


def _known_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


# ---------------------------------------------------------------- connections and commands


def _tcp(hostname: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with Nagle's algorithm off: each command's small packets leave at once
    instead of waiting for the peer's delayed ACK (about 40 ms per command round trip)."""
    sock = socket.create_connection((hostname, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def deadline_of(command: RemoteCommand, options: SSHOptions) -> float:
    """Seconds *command* may take: ``ssh.pull_timeout`` for a pull, else ``ssh.command_timeout``
    plus the seconds it waits on purpose."""
    if command.slow:
        return options.pull_timeout
    return options.command_timeout + command.waits


class _Closeable(Protocol):
    def close(self) -> None: ...


class _Watchdog:
    """Closes a channel (or a whole connection) once *seconds* have passed, which ends every
    paramiko wait on it (``exec_command`` and global requests have no timeout of their own). Once :meth:`cancel` returns, :attr:`fired`
    says for good whether it did."""

    def __init__(self, channel: _Closeable, seconds: float) -> None:
        self.fired = False
        self._channel = channel
        self._lock = threading.Lock()
        self._cancelled = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self.fired = True
        # The channel is closed here at once; telling the host may fail, and need not succeed.
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            self._channel.close()

    def cancel(self) -> None:
        """Stop the timer, unless it already fired."""
        with self._lock:
            self._cancelled = True
        self._timer.cancel()


class SSHTransport:
    """One paramiko connection to one host, reused for every command of a run."""

    def __init__(self, host: Host, options: SSHOptions, *, jump: SSHTransport | None = None) -> None:
        self.host = host
        self.options = options
        self._jump = jump
        self.client = paramiko.SSHClient()
        known = _KnownHosts()
        for path in options.known_hosts:
            known.read(path)
        known.load_into(self.client.get_host_keys())
        self.client.set_missing_host_key_policy(_MissingKeyPolicy(host, options, known.revoked))
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
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise ConnectError(
                    f"{host}: cannot reach it through {self._jump.host}: {exc or type(exc).__name__}"
                ) from exc
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

    def run(
        self, command: RemoteCommand, timeout: float | None = None, *, on_line: LineReader | None = None
    ) -> CommandResult:
        """Run *command*, feeding its stdin and reading both streams until it exits, within its
        deadline (*timeout* seconds if given). *on_line* hears each line of stdout as it arrives:
        the deadline and, for an ``interruptible`` command, the run's cancel still end the wait."""
        limit = deadline_of(command, self.options) if timeout is None else timeout
        deadline = time.monotonic() + limit
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"{self.host}: connection lost")
        # The host must answer the opening of a session and the request to run the command
        # as fast as it answers a login; one that does not is taken for gone.
        answer_within = min(self.options.connect_timeout, limit)
        started = time.monotonic()
        try:
            channel = transport.open_session(timeout=answer_within)
        except paramiko.ChannelException as exc:
            raise ConnectError(
                f"{self.host}: the host refused a session to run {command.describe()}: {exc}"
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if time.monotonic() - started >= answer_within:
                raise self._silent(command, answer_within) from exc
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
        watchdog = _Watchdog(channel, answer_within)
        try:
            try:
                channel.exec_command(command.render())
            except (paramiko.SSHException, OSError, EOFError) as exc:
                watchdog.cancel()
                if watchdog.fired:
                    raise self._silent(command, answer_within) from exc
                raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
            watchdog.cancel()
            if watchdog.fired:  # the answer came just as time ran out: the channel is closed
                raise self._silent(command, answer_within)
            return self._exchange(channel, command, deadline, limit, on_line)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
        finally:
            channel.close()

    def _silent(self, command: RemoteCommand, seconds: float) -> ConnectError:
        """The host did not answer at the SSH level: close the connection, so that the commands
        still to come fail at once instead of each waiting out its deadline."""
        self.client.close()
        return ConnectError(
            f"{self.host}: the host did not answer the request to run {command.describe()} "
            f"within {seconds:g} s; connection closed"
        )

    def _exchange(
        self,
        channel: paramiko.Channel,
        command: RemoteCommand,
        deadline: float,
        limit: float,
        on_line: LineReader | None = None,
    ) -> CommandResult:
        """Feed stdin and read the output of a command the host accepted, until *deadline*;
        hand *on_line* each complete line of stdout as soon as it is read."""
        cancel = self.options.cancel if command.interruptible else None
        if command.stdin:
            channel.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                channel.sendall(command.stdin)
            except TimeoutError as exc:  # the command does not read its stdin
                raise self._overdue(command, limit) from exc
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        lines = _Lines(on_line)
        while True:
            if channel.recv_ready():
                chunk = channel.recv(65536)
                out += chunk
                lines.feed(chunk)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.eof_received or channel.closed:
                break
            elif cancel is not None and cancel.is_set():
                raise Interrupted(f"{self.host}: {command.describe()} abandoned: the run was interrupted")
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._overdue(command, limit)
                select.select([channel], [], [], min(remaining, 1.0))
        lines.end()
        if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise self._overdue(command, limit)
        status = channel.recv_exit_status()
        transport = channel.get_transport()
        if status == -1 and (transport is None or not transport.is_active()):
            raise ConnectError(f"{self.host}: connection lost while running {command.describe()}")
        result = CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))
        if result.status not in command.ok_statuses:
            raise CommandError(f"{self.host}: {command.describe()} failed: {result.reason()}")
        return result

    def _overdue(self, command: RemoteCommand, limit: float) -> CommandError:
        setting = "ssh.pull_timeout" if command.slow else "ssh.command_timeout"
        return CommandError(
            f"{self.host}: {command.describe()} did not finish in time ({limit:g} s); gave up waiting",
            hint=f"the deadline is {setting}; a host whose Docker engine is frozen or overloaded "
            "never answers",
        )

    def _session(
        self, command: RemoteCommand, *, pty: tuple[str, int, int] | None = None
    ) -> paramiko.Channel:
        """A channel running *command* (on a PTY of that terminal type, width and height when
        given), opened and started within ``ssh.connect_timeout``."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"{self.host}: connection lost")
        answer_within = self.options.connect_timeout
        try:
            channel = transport.open_session(timeout=answer_within)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host}: cannot open a session: {exc or type(exc).__name__}") from exc
        watchdog = _Watchdog(channel, answer_within)
        try:
            if pty is not None:
                term, width, height = pty
                channel.get_pty(term=term, width=width, height=height)
            channel.exec_command(command.render())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            watchdog.cancel()
            channel.close()
            if watchdog.fired:
                raise self._silent(command, answer_within) from exc
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
        watchdog.cancel()
        if watchdog.fired:
            raise self._silent(command, answer_within)
        return channel

    def _status(self, channel: paramiko.Channel, command: RemoteCommand) -> int:
        """The exit status of a command whose output has ended, within ``ssh.connect_timeout``."""
        if not channel.status_event.wait(self.options.connect_timeout):
            raise ConnectError(f"{self.host}: no exit status for {command.describe()}: the host stopped answering")
        status = channel.recv_exit_status()
        transport = channel.get_transport()
        if status == -1 and (transport is None or not transport.is_active()):
            raise ConnectError(f"{self.host}: connection lost while running {command.describe()}")
        return status

    def stream(
        self,
        command: RemoteCommand,
        sink: Callable[[bytes, bool], None],
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        terminal: bool = False,
    ) -> int:
        """Run *command*, handing each piece of its output to *sink* as it arrives (``True`` for
        stderr), until it exits; return its exit status, whatever it is.

        With *terminal*, the host runs it on a PTY (one stream, no stdin): when the channel
        closes, the host hangs the terminal up, which ends a command that would never end on its
        own (``docker logs --follow``); without one, closing the channel leaves it running. Once
        *cancel* is set (looked at every ``POLL`` seconds) or past *timeout* seconds, the channel
        is closed and Interrupted or CommandError raised.
        """
        if terminal and command.stdin:
            raise ValueError("a command on a terminal gets no stdin: the terminal would echo it")
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self._session(command, pty=("dumb", 200, 50) if terminal else None)
        try:
            if command.stdin:
                channel.settimeout(self.options.command_timeout)
                try:
                    channel.sendall(command.stdin)
                except TimeoutError as exc:
                    raise self._overdue(command, self.options.command_timeout) from exc
            if not terminal:
                channel.shutdown_write()
            while True:
                if channel.recv_ready():
                    sink(channel.recv(65536), False)
                elif channel.recv_stderr_ready():
                    sink(channel.recv_stderr(65536), True)
                elif channel.eof_received or channel.closed:
                    break
                elif cancel is not None and cancel.is_set():
                    raise Interrupted(f"{self.host}: {command.describe()} stopped")
                else:
                    wait = POLL
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise CommandError(
                                f"{self.host}: {command.describe()} did not finish within {timeout:g} s; stopped"
                            )
                        wait = min(wait, remaining)
                    select.select([channel], [], [], wait)
            return self._status(channel, command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
        finally:
            channel.close()

    def interactive(
        self, command: RemoteCommand, *, stdin_fd: int, stdout_fd: int, size: Callable[[], tuple[int, int]], term: str
    ) -> int:
        """Run *command* on a PTY of the host, of *term* type and the local window's *size*
        (width, height; followed when it changes), wired to the local *stdin_fd* and *stdout_fd*
        (the caller puts the local terminal in raw mode); return its exit status. It ends when
        the command does; the keys typed, Ctrl-C included, go to the command."""
        width, height = size()
        channel = self._session(command, pty=(term, width, height))
        reading = True
        try:
            while True:
                watched = [channel.fileno(), stdin_fd] if reading else [channel.fileno()]
                ready, _, _ = select.select(watched, [], [], POLL)
                if channel.recv_ready():
                    _write_all(stdout_fd, channel.recv(65536))
                elif channel.eof_received or channel.closed:
                    break
                if stdin_fd in ready:
                    typed = os.read(stdin_fd, 4096)
                    if typed:
                        channel.sendall(typed)
                    else:
                        reading = False
                        channel.shutdown_write()
                now = size()
                if now != (width, height):
                    width, height = now
                    channel.resize_pty(width=width, height=height)
            return self._status(channel, command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
        finally:
            channel.close()
    @contextlib.contextmanager
    def forward(self, port: int) -> Iterator[int]:
        """A reverse port forward on this connection: the host's sshd listens on a free port of
        the host's 127.0.0.1 (given to the block) and each connection to it is piped, in a thread,
        to 127.0.0.1:*port* of this machine. When the block ends the host stops listening and every
        piped connection is closed.

        Asking for the forward and cancelling it each have ``ssh.connect_timeout``: a host that
        does not answer has its connection closed, as for a command it does not answer.
        """
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"{self.host}: connection lost")
        relays = _Relays(port)
        try:
            with self._answered("forward a port to this machine"):
                remote = transport.request_port_forward("127.0.0.1", 0, handler=relays.open)
        except paramiko.SSHException as exc:
            if not transport.is_active():
                raise ConnectError(f"{self.host}: connection lost: {exc}") from exc
            raise ConnectError(
                f"{self.host}: the host refused to forward a port to this machine: {exc}",
                hint="the host's sshd must allow it: AllowTcpForwarding yes (or remote), "
                "and DisableForwarding no",
            ) from exc
        try:
            yield remote
        finally:
            relays.close()
            if transport.is_active():
                with (
                    contextlib.suppress(paramiko.SSHException, OSError, EOFError, ConnectError),
                    self._answered("stop forwarding a port"),
                ):
                    transport.cancel_port_forward("127.0.0.1", remote)
            relays.join(self.options.connect_timeout)

    @contextlib.contextmanager
    def _answered(self, what: str) -> Iterator[None]:
        """A request the host must answer within ``ssh.connect_timeout``; if it does not, the
        connection is closed (which ends paramiko's wait) and ConnectError raised."""
        seconds = self.options.connect_timeout
        watchdog = _Watchdog(self.client, seconds)
        try:
            yield
        except (paramiko.SSHException, OSError, EOFError) as exc:
            watchdog.cancel()
            if watchdog.fired:
                raise self._unanswered(what, seconds) from exc
            raise
        finally:
            watchdog.cancel()
        if watchdog.fired:
            raise self._unanswered(what, seconds)

    def _unanswered(self, what: str, seconds: float) -> ConnectError:
        return ConnectError(
            f"{self.host}: the host did not answer the request to {what} within {seconds:g} s; "
            "connection closed"
        )

    def close(self) -> None:
        """Close the connection (and the jump host's, if any)."""
        self.client.close()
        if self._jump is not None:
            self._jump.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Relays:
    """The piped connections of one port forward: each forwarded channel to a new TCP connection
    to 127.0.0.1:*port* of this machine, in a thread of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._lock = threading.Lock()
        self._closed = False
        self._pairs: list[tuple[paramiko.Channel, socket.socket]] = []
        self._threads: list[threading.Thread] = []

    def open(self, channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
        """paramiko's handler of a forwarded connection; it runs in paramiko's own thread, so the
        piping goes to a new thread."""
        thread = threading.Thread(target=self._pipe, args=(channel,), daemon=True, name="deploy-forward")
        with self._lock:
            if self._closed:
                channel.close()
                return
            self._threads.append(thread)
        thread.start()

    def _pipe(self, channel: paramiko.Channel) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError:
            channel.close()
            return
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closed:
                channel.close()
                sock.close()
                return
            self._pairs.append((channel, sock))
        try:
            while not self._closed:
                readable: list[paramiko.Channel | socket.socket] = [channel, sock]
                ready, _, _ = select.select(readable, [], [], 1.0)
                if channel in ready:
                    data = channel.recv(1 << 16)
                    if not data:
                        break
                    sock.sendall(data)
                if sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        break
                    channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException, ValueError):
            pass  # either end closed, or the forward ended: the host's client sees the connection end
        finally:
            channel.close()
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """End every piped connection; connections forwarded later are refused."""
        with self._lock:
            self._closed = True
            pairs = list(self._pairs)
        for channel, sock in pairs:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join(self, seconds: float) -> None:
        """Wait (at most *seconds* in all) for the piping threads to end."""
        deadline = time.monotonic() + seconds
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Lines:
    """Cuts a byte stream into lines for a :data:`LineReader` (none: does nothing)."""

    def __init__(self, reader: LineReader | None) -> None:
        self._reader = reader
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Hand the reader every line *chunk* completes."""
        if self._reader is None:
            return
        self._pending += chunk
        *complete, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        for line in complete:
            self._reader(line.decode(errors="replace").rstrip("\r"))

    def end(self) -> None:
        """Hand the reader the last line, when the output did not end with a line ending."""
        if self._reader is not None and self._pending:
            self._reader(self._pending.decode(errors="replace").rstrip("\r"))
            self._pending.clear()


class _MissingKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys with the way to trust them; add them only when allowed."""

    def __init__(self, host: Host, options: SSHOptions, revoked: set[str]) -> None:
        self.host = host
        self.options = options
        self.revoked = revoked

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if key.get_base64() in self.revoked:
            raise HostKeyError(
                f"{self.host}: the host offered a key that known_hosts marks @revoked "
                f"({key.get_name()} {_fingerprint(key)}); refusing to connect"
            )
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
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a", encoding="utf-8") as known:
                known.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        except OSError as exc:
            raise HostKeyError(
                f"{target}: cannot record the key of {self.host}: {exc.strerror or exc}"
            ) from exc
        client.get_host_keys().add(name, key.get_name(), key)
        self.options.on_new_key(f"{self.host}: added {key.get_name()} {_fingerprint(key)} to {target}")


def connect(host: Host, options: SSHOptions, jump_host: Callable[[str], Host] | None = None) -> SSHTransport:
    """Open the connection to *host*, through its ProxyJump chain first if it has one; *jump_host*
    resolves a ProxyJump entry to a host."""
    if host.proxy_jump and jump_host is None:
        raise ConnectError(f"{host}: ProxyJump {host.proxy_jump} cannot be resolved")
    hops = route(host, jump_host) if jump_host is not None else [host]
    transport: SSHTransport | None = None
    try:
        for hop in hops:
            transport = SSHTransport(hop, options, jump=transport)
    except BaseException:
        if transport is not None:
            transport.close()
        raise
    assert transport is not None
    return transport


def connector(
    inventory: Inventory,
    *,
    accept_new_host_keys: bool,
    on_new_key: Callable[[str], None],
    cancel: threading.Event | None = None,
) -> Callable[[Host], Transport]:
    """How the hosts of *inventory* are reached: its ssh section, known_hosts files and SSH client
    config (for ProxyJump hosts). *on_new_key* hears of each key recorded; setting *cancel* makes
    a pull in progress stop."""
    ssh = inventory.ssh
    known = [Path(USER_KNOWN_HOSTS).expanduser()]
    if ssh.known_hosts:
        known.append(inventory.local_path(ssh.known_hosts))
    options = SSHOptions(
        known_hosts=tuple(known),
        accept_new_host_keys=accept_new_host_keys,
        connect_timeout=ssh.connect_timeout,
        command_timeout=ssh.command_timeout,
        pull_timeout=ssh.pull_timeout,
        on_new_key=on_new_key,
        cancel=cancel,
    )
    lookup = ssh_config(inventory)

    def jump_host(spec: str) -> Host:
        return resolve(inventory, parse_jump(spec), lookup)

    return lambda host: connect(host, options, jump_host)
