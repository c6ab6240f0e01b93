"""A scripted stand-in for one host, to test orchestration decisions without a network.

It understands exactly the commands of :mod:`deployer.commands` and :mod:`deployer.state`,
recognised by their argv or their purpose, and keeps a tiny model of the
host's containers, lock and history. The end-to-end tests run the same decisions on real hosts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from deployer.commands import RemoteCommand
from deployer.errors import CommandError, ConnectError
from deployer.state import LOCK_HELD
from deployer.transport import CommandResult, LineReader


@dataclass
class FakeContainer:
    name: str
    release: str
    digest: str
    state: str = "created"
    role: str = "web"
    argv: tuple[str, ...] = ()


@dataclass
class FakeHost:
    name: str
    healthy: set[str] = field(default_factory=set)  # releases that answer 2xx
    fail_pull: bool = False
    unreachable_after: int | None = None  # commands served before the connection drops
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    lock: bytes | None = None
    history_full: bool = False  # the disk is full: history cannot be written
    fail_create: bool = False  # docker create refuses the container
    engine_down: bool = False  # docker answers nothing: every read of the containers fails
    crashing: set[str] = field(default_factory=set)  # (role, release) whose container exits at once
    pull_output: str = ""  # what `docker pull` prints, line by line to the reader
    log: list[RemoteCommand] = field(default_factory=list)
    #: the local port of each reverse forward asked for; the host's end is 40000 + their count
    forwards: list[int] = field(default_factory=list)
    forwarding: bool = False

    @contextmanager
    def forward(self, port: int) -> Iterator[int]:
        self.forwards.append(port)
        self.forwarding = True
        try:
            yield 40000 + len(self.forwards)
        finally:
            self.forwarding = False
    #: one command at a time, as a real host's lock file makes its check-and-link atomic
    busy: threading.Lock = field(default_factory=threading.Lock, repr=False)
    stream_status: int = 0  # the exit status of a streamed command (a one-off container, exec, logs)
    stream_output: bytes = b""

    def stream(
        self,
        command: RemoteCommand,
        sink: Callable[[bytes, bool], None],
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        terminal: bool = False,
    ) -> int:
        self.log.append(command)
        if self.stream_output:
            sink(self.stream_output, False)
        return self.stream_status

    def run(
        self, command: RemoteCommand, timeout: float | None = None, *, on_line: LineReader | None = None
    ) -> CommandResult:
        if command.parts:  # a chain: its commands one after the other, the first failure ends it
            return [self.run(part, timeout, on_line=on_line) for part in command.parts][-1]
        if command.purpose == "docker pull" and on_line is not None and not self.fail_pull:
            for line in self.pull_output.splitlines():
                on_line(line)
        with self.busy:
            return self._run(command)

    def _run(self, command: RemoteCommand) -> CommandResult:
        if self.unreachable_after is not None and len(self.log) >= self.unreachable_after:
            raise ConnectError(f"{self.name}: connection lost")
        self.log.append(command)
        argv = command.argv
        if argv[:2] == ("sh", "-c"):
            return self._script(command)
        if argv[:3] == ("docker", "container", "start"):
            c = self.containers[argv[3]]
            c.state = "exited" if (c.role, c.release) in self.crashing else "running"
        elif argv[:3] == ("docker", "container", "stop"):
            self.containers[argv[-1]].state = "exited"
        elif argv[:3] == ("docker", "container", "inspect"):
            c = self.containers[argv[-1]]
            return CommandResult(0, f"{c.state}|0|0||10.0.0.9 |2026-01-01T00:00:00Z\n", "")
        elif argv[:3] == ("docker", "container", "rm"):
            for name in argv[3:]:
                self.containers.pop(name, None)
        elif argv[:3] == ("docker", "container", "logs"):
            return CommandResult(0, "boom\n", "")
        elif command.purpose == "docker create":
            self._create(argv)
        return CommandResult(0, "", "")

    def _script(self, command: RemoteCommand) -> CommandResult:
        purpose, args = command.purpose, command.argv[4:]
        if purpose == "take the lock and read containers and history":
            if args[4] == "break":
                self.lock = None
            if self.lock is not None:
                return CommandResult(LOCK_HELD, self.lock.decode(), "")
            self.lock = command.stdin
            return self._state()
        elif purpose == "release the deploy lock":
            if self.lock is not None and args[1].encode() in self.lock:
                self.lock = None
        elif purpose == "record history":
            if self.history_full:
                raise CommandError(f"{self.name}: record history failed: No space left on device")
            self.history.extend(command.stdin.decode().splitlines())
        elif purpose == "read containers and history":
            if self.engine_down:
                raise CommandError(f"{self.name}: read containers and history failed: Cannot connect to the Docker daemon")
            return self._state()
        elif purpose == "docker pull":
            if "127.0.0.1:" in command.render() and not self.forwarding:
                raise CommandError(f"{self.name}: docker pull failed: connection refused (no forward)")
            if self.fail_pull:
                raise CommandError(f"{self.name}: script failed: manifest unknown")
        elif purpose == "docker create":
            self._create(command.argv)
        elif purpose == "health probe":
            running = [c for c in self.containers.values() if c.state == "running"]
            ok = any(c.release in self.healthy for c in running)
            return CommandResult(0, "200" if ok else "503", "")
        return CommandResult(0, "", "")

    def _state(self) -> CommandResult:
        lines = [
            json.dumps(
                {
                    "Names": c.name,
                    "State": c.state,
                    "Labels": f"deployer.app=web,deployer.release={c.release},deployer.digest={c.digest}"
                    + (f",deployer.role={c.role}" if c.role != "web" else ""),
                    "CreatedAt": str(i),
                }
            )
            for i, c in enumerate(self.containers.values())
        ]
        return CommandResult(0, "\n".join([*lines, "---", *self.history]) + "\n", "")

    def _create(self, argv: tuple[str, ...]) -> None:
        if self.fail_create:
            raise CommandError(f"{self.name}: docker create failed: invalid environment variable")
        name = argv[argv.index("--name") + 1]
        labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
        self.containers[name] = FakeContainer(
            name, labels["deployer.release"], labels["deployer.digest"], role=labels.get("deployer.role", "web"), argv=argv
        )

    def serving(self, role: str = "web") -> str | None:
        running = [c.release for c in self.containers.values() if c.state == "running" and c.role == role]
        assert len(running) <= 1, running
        return running[0] if running else None

    def close(self) -> None:
        pass
