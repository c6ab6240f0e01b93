"""A bounded request load for end-to-end tests, and a WebSocket probe.

    targets = [Target(host.address, 80, host_header="web.lab") for host in lab.hosts]
    with Load(targets, rate=20, max_seconds=300) as load:
        ...                                   # roll out, roll back
    summary = load.summary()
    assert summary.failed == 0, summary
    assert summary.bodies <= {"v1", "v2"}

Each target gets `rate` requests a second from a small thread pool, on a new connection
each, until stop() or a bound (max_seconds, max_requests) ends the run by itself. Only IP
addresses of private networks or loopback are accepted (the lab's hosts): nothing is
resolved and nothing leaves the machine. HTTPS connects to the IP but sends the Host name
as SNI and verifies the certificate for that name against `ca_file`.

    with WsProbe(Target(address, 80, host_header="chat.lab", path="/ws"), interval=0.2) as probe:
        ...                                   # switch releases
    result = probe.result()                   # answers, how and when the connection closed
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

MAX_RATE = 100.0  # requests a second per target
MAX_SECONDS = 900.0  # the longest run
MAX_REQUESTS = 100_000  # the most requests of a run
MAX_TARGETS = 16
MAX_WORKERS = 64
MAX_TIMEOUT = 30.0
MAX_BODY = 64 * 1024  # bytes of a body that are read and kept
EXAMPLES = 5  # failures a summary keeps


@dataclass(frozen=True)
class Target:
    """Where requests go: an IP `address` and `port`; `scheme` http or https; the Host
    header (and, for https, the SNI and certificate name) `host_header`, by default the
    address; `ca_file` the CA that must have signed an https server's certificate (None:
    the system's CAs); `path` what to ask for."""

    address: str
    port: int = 80
    scheme: str = "http"
    host_header: str | None = None
    ca_file: str | Path | None = None
    path: str = "/version"

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(f"target address must be an IP address, not {self.address!r}") from None
        if not (ip.is_private or ip.is_loopback):
            raise ValueError(f"target address {ip} is not on a private network or loopback")
        if self.scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {self.scheme!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1 to 65535, not {self.port}")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with /, not {self.path!r}")

    @property
    def server_name(self) -> str:
        return self.host_header or self.address

    @property
    def authority(self) -> str:
        """The Host header: the server name, with the port unless it is the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        return self.server_name if self.port == default else f"{self.server_name}:{self.port}"

    @property
    def name(self) -> str:
        """scheme://host_header:port/path@address, for reports."""
        return f"{self.scheme}://{self.server_name}:{self.port}{self.path}@{self.address}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


@dataclass(frozen=True)
class Sample:
    """One request: `at` (time.monotonic() when it was sent), `elapsed` seconds, the
    target, and the answer's `status` and `body` (stripped) or the `error`."""

    at: float
    elapsed: float
    target: Target
    status: int | None
    body: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def __str__(self) -> str:
        answer = self.error if self.error is not None else f"HTTP {self.status} {self.body[:80]!r}"
        return f"{self.target.name} at {self.at:.3f} ({self.elapsed:.3f} s): {answer}"


@dataclass(frozen=True)
class Summary:
    """What a run saw: `total` requests, `failed` ones (an error or a status outside 2xx),
    a few `examples` of failures, the distinct `bodies` of the 2xx answers, and
    (total, failed) by target name."""

    total: int
    failed: int
    examples: tuple[Sample, ...]
    bodies: frozenset[str]
    by_target: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.total} requests, {self.failed} failed; bodies {sorted(self.bodies)}"]
        lines += [f"  {name}: {total} requests, {failed} failed"
                  for name, (total, failed) in sorted(self.by_target.items())]
        lines += [f"  failed: {sample}" for sample in self.examples]
        return "\n".join(lines)


def summarize(samples: Iterable[Sample], examples: int = EXAMPLES) -> Summary:
    """Count the samples, keep the first `examples` failures and the 2xx bodies."""
    total = failed = 0
    kept: list[Sample] = []
    bodies: set[str] = set()
    by_target: dict[str, tuple[int, int]] = {}
    for sample in sorted(samples, key=lambda s: s.at):
        total += 1
        seen, bad = by_target.get(sample.target.name, (0, 0))
        if sample.ok:
            bodies.add(sample.body)
        else:
            failed += 1
            bad += 1
            if len(kept) < examples:
                kept.append(sample)
        by_target[sample.target.name] = (seen + 1, bad)
    return Summary(total, failed, tuple(kept), frozenset(bodies), by_target)


class _PinnedHTTPSConnection(http.client.HTTPConnection):
    """HTTPS to an IP address, with SNI and certificate check for another name."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.address, target.port, timeout=timeout)
        self._target = target

    def connect(self) -> None:
        super().connect()
        self.sock = self._target.ssl_context().wrap_socket(
            self.sock, server_hostname=self._target.server_name)


def request(target: Target, timeout: float = 5.0) -> Sample:
    """Send one GET to `target` on a new connection and record what happened."""
    started = time.monotonic()
    connection: http.client.HTTPConnection = (
        _PinnedHTTPSConnection(target, timeout) if target.scheme == "https"
        else http.client.HTTPConnection(target.address, target.port, timeout=timeout))
    try:
        connection.request("GET", target.path, headers={
            "Host": target.authority, "Connection": "close", "User-Agent": "deploy-lab-load"})
        response = connection.getresponse()
        body = response.read(MAX_BODY).decode(errors="replace").strip()
        return Sample(started, time.monotonic() - started, target, response.status, body, None)
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}"
        return Sample(started, time.monotonic() - started, target, None, "", error)
    finally:
        connection.close()


class Load:
    """Requests at a fixed rate to every target, in the background, within hard bounds."""

    def __init__(self, targets: Sequence[Target], rate: float = 20.0, max_seconds: float = 300.0,
                 max_requests: int | None = None, timeout: float = 5.0, workers: int = 16) -> None:
        if not 1 <= len(targets) <= MAX_TARGETS:
            raise ValueError(f"give 1 to {MAX_TARGETS} targets, not {len(targets)}")
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be above 0 and at most {MAX_RATE:g} a second, not {rate}")
        if not 0 < max_seconds <= MAX_SECONDS:
            raise ValueError(f"max_seconds must be above 0 and at most {MAX_SECONDS:g}, not {max_seconds}")
        if max_requests is not None and not 0 < max_requests <= MAX_REQUESTS:
            raise ValueError(f"max_requests must be 1 to {MAX_REQUESTS}, not {max_requests}")
        if not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be above 0 and at most {MAX_TIMEOUT:g}, not {timeout}")
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}, not {workers}")
        self.targets = tuple(targets)
        self.rate = rate
        self.max_seconds = max_seconds
        self.max_requests = min(max_requests or MAX_REQUESTS, MAX_REQUESTS)
        self.timeout = timeout
        self.started_at: float | None = None
        self._workers = workers
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Load:
        """Start sending (once); returns self."""
        if self._thread is not None:
            raise RuntimeError("this load has already started")
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.started_at is not None
        deadline = self.started_at + self.max_seconds
        sent = [0] * len(self.targets)
        try:
            with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="load") as pool:
                while not self._stop.is_set() and sum(sent) < self.max_requests:
                    index = min(range(len(sent)), key=lambda i: sent[i])
                    due = self.started_at + sent[index] / self.rate
                    if due >= deadline:
                        break
                    if self._stop.wait(max(0.0, due - time.monotonic())):
                        break
                    pool.submit(self._one, self.targets[index])
                    sent[index] += 1
        finally:
            self._done.set()

    def _one(self, target: Target) -> None:
        sample = request(target, self.timeout)
        with self._lock:
            self._samples.append(sample)

    def stop(self) -> Summary:
        """Stop sending, wait for the requests in flight (each ends within `timeout`)."""
        self._stop.set()
        self.wait()
        return self.summary()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run has ended (by stop() or a bound); False on timeout."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    @property
    def samples(self) -> list[Sample]:
        """The requests answered so far, in the order they ended."""
        with self._lock:
            return list(self._samples)

    def summary(self, since: float | None = None) -> Summary:
        """Summary of the requests so far (sent at or after time.monotonic() `since`)."""
        return summarize(s for s in self.samples if since is None or s.at >= since)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


# ------------------------------------------------------------------------- WebSocket


@dataclass(frozen=True)
class WsResult:
    """One probe connection: whether it `connected` (else `error` says why), the `sent`
    messages, the `answers` as (time.monotonic(), text), and, once it closed, the
    `close_code`, `close_reason` and `closed_at`; `error` also holds an unexpected
    failure after the connection was open."""

    connected: bool
    sent: int
    answers: tuple[tuple[float, str], ...]
    close_code: int | None
    close_reason: str | None
    closed_at: float | None
    closed_by_probe: bool
    error: str | None

    @property
    def versions(self) -> list[str]:
        """The release that answered each message (the text before the first colon)."""
        return [text.split(":", 1)[0] for _, text in self.answers]

    @property
    def unanswered(self) -> int:
        return self.sent - len(self.answers)

    def __str__(self) -> str:
        closed = ("open" if self.closed_at is None
                  else f"closed {self.close_code} {self.close_reason!r}"
                       f" ({'by the probe' if self.closed_by_probe else 'by the server'})")
        return (f"connected={self.connected} sent={self.sent} answers={len(self.answers)} "
                f"versions={sorted(set(self.versions))} {closed} error={self.error}")


class WsProbe:
    """A WebSocket connection to `target` (path /ws), opened by start(), that sends a
    message every `interval` seconds and waits up to `answer_timeout` for each answer,
    until stop(), the server closing it, or `max_seconds`.

    The messages are "m1", "m2", ...; the WebSocket sample app answers "<version>:m1".
    """

    def __init__(self, target: Target, interval: float = 0.2, max_seconds: float = 300.0,
                 open_timeout: float = 5.0, answer_timeout: float = 5.0) -> None:
        if not 0.01 <= interval <= 60:
            raise ValueError(f"interval must be 0.01 to 60 seconds, not {interval}")
        if not 0 < max_seconds <= MAX_SECONDS:
            raise ValueError(f"max_seconds must be above 0 and at most {MAX_SECONDS:g}, not {max_seconds}")
        if not (0 < open_timeout <= MAX_TIMEOUT and 0 < answer_timeout <= MAX_TIMEOUT):
            raise ValueError(f"timeouts must be above 0 and at most {MAX_TIMEOUT:g}")
        self.target = target
        self.interval = interval
        self.max_seconds = max_seconds
        self.open_timeout = open_timeout
        self.answer_timeout = answer_timeout
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, object] = {}
        self._answers: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def start(self) -> WsProbe:
        """Connect and start exchanging messages; returns once the connection is open
        (or failed: then result().connected is False)."""
        if self._thread is not None:
            raise RuntimeError("this probe has already started")
        self._thread = threading.Thread(target=self._run, name="ws-probe", daemon=True)
        self._thread.start()
        self._opened.wait(self.open_timeout + 5)
        return self

    def _run(self) -> None:
        try:
            with connect_ws(self.target, self.open_timeout) as ws:
                self._state["connected"] = True
                self._opened.set()
                deadline = time.monotonic() + self.max_seconds
                sent = 0
                try:
                    while time.monotonic() < deadline:
                        ws.send(f"m{sent + 1}")
                        sent += 1
                        self._state["sent"] = sent
                        answer = ws.recv(timeout=self.answer_timeout)
                        with self._lock:
                            self._answers.append((time.monotonic(), str(answer)))
                        if self._stop.wait(self.interval):
                            self._state["closed_by_probe"] = True
                            break
                    else:
                        self._state["closed_by_probe"] = True
                except ConnectionClosed:
                    pass
                except (OSError, TimeoutError) as exc:
                    self._state["error"] = f"{type(exc).__name__}: {exc}"
                if not self._state.get("closed_by_probe"):
                    self._state["closed_at"] = time.monotonic()
                ws.close()
                self._state["close_code"] = ws.close_code
                self._state["close_reason"] = ws.close_reason
                self._state.setdefault("closed_at", time.monotonic())
        except Exception as exc:
            self._state.setdefault("error", f"{type(exc).__name__}: {exc}")
        finally:
            self._opened.set()

    def stop(self) -> WsResult:
        """Close the connection (if still open) and return the result."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.answer_timeout + 15)
        return self.result()

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the connection to end; whether it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> WsResult:
        """What the probe saw so far."""
        state = dict(self._state)
        with self._lock:
            answers = tuple(self._answers)
        code = state.get("close_code")
        closed_at = state.get("closed_at")
        return WsResult(
            connected=bool(state.get("connected")), sent=int(str(state.get("sent", 0))),
            answers=answers, close_code=int(str(code)) if code is not None else None,
            close_reason=str(state["close_reason"]) if state.get("close_reason") is not None else None,
            closed_at=float(str(closed_at)) if closed_at is not None else None,
            closed_by_probe=bool(state.get("closed_by_probe")),
            error=str(state["error"]) if state.get("error") is not None else None)

    def __enter__(self) -> WsProbe:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def connect_ws(target: Target, open_timeout: float = 5.0) -> Iterator[ClientConnection]:
    """A websockets sync client connection to target.address:port, with the Host header
    (and for https the SNI and certificate name) target.host_header."""
    ws_scheme = "wss" if target.scheme == "https" else "ws"
    sock = socket.create_connection((target.address, target.port), timeout=open_timeout)
    try:
        tls = target.ssl_context() if target.scheme == "https" else None
        with connect(f"{ws_scheme}://{target.authority}{target.path}", sock=sock, ssl=tls,
                     server_hostname=target.server_name if tls else None,
                     open_timeout=open_timeout, close_timeout=5, ping_interval=None) as ws:
            yield ws
    finally:
        sock.close()


def ws_exchange(target: Target, message: str, timeout: float = 5.0) -> str:
    """Open a connection, send one message, return the answer, close."""
    with connect_ws(target, timeout) as ws:
        ws.send(message)
        return str(ws.recv(timeout=timeout))

