"""An SSH server on 127.0.0.1, in this process, that misbehaves on purpose.

It accepts any public key. What it does with a session or a command is its `behaviour`:

- ``ok``: runs nothing, answers every command with its command line and stdin on stdout, exit 0;
- ``hang``: accepts the command, then never answers (a host whose Docker engine froze);
- ``deaf``: accepts the command and never reads its stdin;
- ``silent``: never answers the request to run a command (nor anything after it);
- ``drip``: prints a first line, waits (at most 10 s) until the client says it has read it
  (:attr:`FakeSSHServer.heard`), then prints whether it did, and keeps the command running
  until released (a pull whose output comes in bit by bit);
- ``no-session``: never answers the opening of a session.

A terminal (PTY) is granted to whoever asks; :attr:`FakeSSHServer.ptys` lists the requests.
A reverse port forward (``tcpip-forward``) is granted on port :attr:`FakeSSHServer.FORWARD_PORT`
unless the behaviour is ``no-forward`` (refused) or ``silent`` (never answered);
:meth:`FakeSSHServer.connect_forwarded` then plays a program on the host connecting to it.

Whatever is stuck is let go by :meth:`FakeSSHServer.close`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import paramiko


class _Server(paramiko.ServerInterface):
    def __init__(self, fake: FakeSSHServer) -> None:
        self.fake = fake

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if self.fake.behaviour == "no-session":
            self.fake.released.wait()
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(
        self, channel: paramiko.Channel, term: bytes, width: int, height: int, pw: int, ph: int, modes: bytes
    ) -> bool:
        self.fake.ptys.append((term.decode() if isinstance(term, bytes) else term, width, height))
        return True

    def check_channel_window_change_request(
        self, channel: paramiko.Channel, width: int, height: int, pw: int, ph: int
    ) -> bool:
        self.fake.ptys.append(("resize", width, height))
        return True
    def check_port_forward_request(self, address: str, port: int) -> int | bool:
        self.fake.forwards.append((address, port))
        if self.fake.behaviour == "silent":
            self.fake.released.wait()
        if self.fake.behaviour == "no-forward":
            return False
        return FakeSSHServer.FORWARD_PORT

    def cancel_port_forward_request(self, address: str, port: int) -> None:
        self.fake.cancelled.append((address, port))

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        behaviour = self.fake.behaviour
        self.fake.commands.append(command.decode())
        if behaviour == "silent":
            self.fake.released.wait()
            return False
        if behaviour == "ok":
            threading.Thread(target=self._answer, args=(channel, command), daemon=True).start()
        if behaviour == "drip":
            threading.Thread(target=self._drip, args=(channel,), daemon=True).start()
        return True

    def _drip(self, channel: paramiko.Channel) -> None:
        channel.sendall(b"first line\n")
        heard = self.fake.heard.wait(10)
        channel.sendall(b"the client had read it\n" if heard else b"the client had not read it\n")
        channel.sendall(b"no line ending")
        if self.fake.finish.wait(10):
            channel.send_exit_status(0)
            channel.close()

    @staticmethod
    def _answer(channel: paramiko.Channel, command: bytes) -> None:
        stdin = bytearray()
        while chunk := channel.recv(65536):
            stdin += chunk
        channel.sendall(command + b"\n" + bytes(stdin))
        channel.send_exit_status(0)
        channel.close()


class FakeSSHServer:
    """Listens on 127.0.0.1 at :attr:`port` until closed."""

    FORWARD_PORT = 47001

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.host_key = paramiko.ECDSAKey.generate()
        self.commands: list[str] = []
        self.ptys: list[tuple[str, int, int]] = []
        #: (address, port) of each forward asked for, and of each cancelled
        self.forwards: list[tuple[str, int]] = []
        self.cancelled: list[tuple[str, int]] = []
        self.released = threading.Event()
        #: ``drip``: set by the client once it has read the first line; then ``finish`` ends the command
        self.heard = threading.Event()
        self.finish = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            # The client may go away during the handshake (a refused host key).
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                transport.start_server(server=_Server(self))

    def connect_forwarded(self) -> paramiko.Channel:
        """A connection to the forwarded port, as a program on the host would open it."""
        return self._transports[-1].open_forwarded_tcpip_channel(("127.0.0.1", 50000), ("127.0.0.1", self.FORWARD_PORT))

    def known_hosts_line(self) -> str:
        """Its line for a known_hosts file."""
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def close(self) -> None:
        self.released.set()
        self._listener.close()
        for transport in self._transports:
            transport.close()


def client_key(directory: Path) -> Path:
    """A fresh private key file for logging in."""
    path = directory / "id_ecdsa"
    paramiko.ECDSAKey.generate().write_private_key_file(str(path))
    return path
