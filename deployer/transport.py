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
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import paramiko
from paramiko.hostkeys import HostKeyEntry

from deployer.commands import RemoteCommand
from deployer.config import Inventory
from deployer.errors import CommandError, ConfigError, ConnectError, HostKeyError, Interrupted
from deployer.inventory import Host, SSHConfigEntry, SSHLookup, no_ssh_config, parse_jump, resolve

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


class Transport(Protocol):
    """Runs commands on one host. The SSH transport and the test transports share it."""

    def run(self, command: RemoteCommand, timeout: float | None = None) -> CommandResult:
        """Run *command*; raise CommandError if it fails or passes its deadline."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


@runtime_checkable
class Streaming(Protocol):
    """A transport that hands a command's output over as it comes (the SSH transport does)."""

    def stream(self, command: RemoteCommand, on_line: Callable[[str], None], cancel: threading.Event) -> int:
        """Run *command* until it exits or *cancel* is set; return its exit status (-1 if cancelled)."""
        ...


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


class _Watchdog:
    """Closes a channel once *seconds* have passed, which ends every paramiko wait on it
    (``exec_command`` has no timeout of its own). Once :meth:`cancel` returns, :attr:`fired`
    says for good whether it did."""

    def __init__(self, channel: paramiko.Channel, seconds: float) -> None:
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

    def run(self, command: RemoteCommand, timeout: float | None = None) -> CommandResult:
        """Run *command*, feeding its stdin and reading both streams until it exits, within its
        deadline (*timeout* seconds if given)."""
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
            return self._exchange(channel, command, deadline, limit)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
        finally:
            channel.close()

    def stream(self, command: RemoteCommand, on_line: Callable[[str], None], cancel: threading.Event) -> int:
        """Run *command*, handing each line of its output (stderr merged into stdout) to *on_line*
        as it comes, until it exits or *cancel* is set. Its stdin stays open while it runs and is
        closed with the session: a command that follows something ends on that (no deadline but
        the answer to the request to run it, within ``ssh.connect_timeout``). The exit status,
        or -1 when cancelled."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"{self.host}: connection lost")
        answer_within = self.options.connect_timeout
        pending = b""
        try:
            channel = transport.open_session(timeout=answer_within)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host}: connection lost: {exc or type(exc).__name__}") from exc
        try:
            channel.set_combine_stderr(True)
            watchdog = _Watchdog(channel, answer_within)
            channel.exec_command(command.render())
            watchdog.cancel()
            if watchdog.fired:
                raise self._silent(command, answer_within)
            if command.stdin:
                channel.sendall(command.stdin)
            while not cancel.is_set():
                if channel.recv_ready():
                    pending += channel.recv(65536)
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        on_line(line.decode(errors="replace").rstrip("\r"))
                elif channel.eof_received or channel.closed:
                    if pending:
                        on_line(pending.decode(errors="replace"))
                    return channel.recv_exit_status()
                else:
                    select.select([channel], [], [], 0.2)
            return -1
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
        self, channel: paramiko.Channel, command: RemoteCommand, deadline: float, limit: float
    ) -> CommandResult:
        """Feed stdin and read the output of a command the host accepted, until *deadline*."""
        cancel = self.options.cancel if command.interruptible else None
        if command.stdin:
            channel.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                channel.sendall(command.stdin)
            except TimeoutError as exc:  # the command does not read its stdin
                raise self._overdue(command, limit) from exc
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            if channel.recv_ready():
                out += channel.recv(65536)
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

    def close(self) -> None:
        """Close the connection (and the jump host's, if any)."""
        self.client.close()
        if self._jump is not None:
            self._jump.close()


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
