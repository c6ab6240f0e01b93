"""The outer Docker engine: find it on /var/run/docker.sock or start it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import docker

SOCKET_PATH = "/var/run/docker.sock"
DOCKERD_PID_FILE = Path("/var/run/docker.pid")
# Pid files a killed dockerd (and the containerd it manages) leave behind, by daemon name.
STALE_PID_FILES = {
    DOCKERD_PID_FILE: "dockerd",
    Path("/var/run/docker/containerd/containerd.pid"): "containerd",
}
START_TIMEOUT = 60.0
# The dockerd this process started, kept so it is not reported as a leaked child.
_started: list[subprocess.Popen[bytes]] = []


def _client() -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{SOCKET_PATH}", timeout=120)


def _answers() -> bool:
    """Whether an engine answers /_ping on the socket.

    Probed with a plain socket: the Docker SDK leaks its socket when the connection fails.
    """
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(SOCKET_PATH)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def _daemon_running(pid_file: Path, name: str) -> bool:
    """Whether the pid in `pid_file` is a running process called `name` (not a reused pid)."""
    try:
        pid = int(pid_file.read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except (OSError, ValueError):
        return False


def clear_stale_pid_files() -> None:
    """Remove pid files whose daemon is gone (left when dockerd was killed)."""
    for pid_file, name in STALE_PID_FILES.items():
        if pid_file.exists() and not _daemon_running(pid_file, name):
            pid_file.unlink()


def ensure_engine(log_file: Path) -> docker.DockerClient:
    """Return a client for the outer engine, starting `dockerd` if none is running."""
    if _answers():
        return _client()
    proc = None
    if not _daemon_running(DOCKERD_PID_FILE, "dockerd"):
        clear_stale_pid_files()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                ["dockerd"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this Python process
            )
        _started.append(proc)
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}; see {log_file}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT:.0f} s; see {log_file}")
        time.sleep(0.2)
    return _client()
