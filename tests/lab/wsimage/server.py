"""The WebSocket sample app: HTTP and WebSocket on port 8080 (the `websockets` package).

    GET /health          200 "ok" (mode unhealthy: 500; mode slow: 503 for the first
                         SLOW_SECONDS seconds)
    GET /version         200 "<version>\\n"
    GET /slow?SECONDS    200 "<version>\\n" after sleeping SECONDS (0 to 10)
    WebSocket /ws        answers each text message with "<version>:<message>"

The version and mode come from the files `version` and `mode` next to this script;
APP_IGNORE_SIGTERM=1 in the environment also ignores SIGTERM. On SIGTERM (unless ignored)
the server stops accepting, lets requests in flight finish, closes open WebSocket
connections with 1001 (going away) and exits 0.

`server.py check` asks 127.0.0.1:8080/health and exits 0 on a 200 (the image's HEALTHCHECK).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by main() alone: `check` (the HEALTHCHECK) stays light
    from websockets.http11 import Request, Response
    from websockets.sync.server import Server, ServerConnection

PORT = 8080
MAX_SLOW = 10.0
HERE = Path(__file__).resolve().parent
STARTED = time.monotonic()


def _read(name: str, default: str) -> str:
    try:
        return (HERE / name).read_text().strip() or default
    except OSError:
        return default


VERSION = _read("version", "v0")
MODE, _, ARGUMENT = _read("mode", "ok").partition(" ")


def _health() -> tuple[int, str]:
    if MODE == "unhealthy":
        return 500, "unhealthy\n"
    if MODE == "slow" and time.monotonic() - STARTED < float(ARGUMENT or 8):
        return 503, "starting\n"
    return 200, "ok\n"


def _seconds(query: str) -> float:
    try:
        seconds = float(query)
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), MAX_SLOW) if seconds == seconds else 0.0


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    """Plain HTTP answers; None lets a WebSocket upgrade to /ws go ahead."""
    path, _, query = request.path.partition("?")
    if path == "/ws" and "upgrade" in request.headers.get("Connection", "").lower():
        return None
    if path == "/health":
        return connection.respond(*_health())
    if path == "/version":
        return connection.respond(200, VERSION + "\n")
    if path == "/slow":
        time.sleep(_seconds(query))
        return connection.respond(200, VERSION + "\n")
    return connection.respond(404, "not found\n")


def echo(connection: ServerConnection) -> None:
    for message in connection:
        if isinstance(message, str):
            connection.send(f"{VERSION}:{message}")


def check() -> int:
    """Exit status 0 when /health answers 200."""
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return 0 if sock.recv(32).startswith(b"HTTP/1.1 200 ") else 1
    except OSError:
        return 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        return check()
    from websockets.sync.server import serve

    ignore = MODE == "ignore-sigterm" or os.environ.get("APP_IGNORE_SIGTERM") == "1"
    with serve(echo, "0.0.0.0", PORT, process_request=process_request) as server:
        if ignore:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, lambda *_: _stop(server))
        print(f"serving {VERSION} on :{PORT} (mode {MODE}, SIGTERM "
              f"{'ignored' if ignore else 'stops'})", flush=True)
        server.serve_forever()
    _dump_modules()
    return 0


def _stop(server: Server) -> None:
    # shutdown() waits for serve_forever(), which this (main) thread runs: call it elsewhere.
    threading.Thread(target=server.shutdown, daemon=True).start()


def _dump_modules() -> None:
    """Write the files of every loaded module to $APP_DUMP_MODULES (to build the image)."""
    target = os.environ.get("APP_DUMP_MODULES")
    if target:
        files = sorted({str(m.__file__) for m in list(sys.modules.values())
                        if getattr(m, "__file__", None)})
        Path(target).write_text("\n".join(files) + "\n")


if __name__ == "__main__":
    sys.exit(main())
