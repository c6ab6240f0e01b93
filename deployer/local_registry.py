"""The registry on this machine that holds and serves releases when the app has none (``app.registry: false``).

It is a CNCF Distribution registry (Debian's ``docker-registry``, or upstream's ``registry``
binary) run as a child process for the length of one run: bound to 127.0.0.1 on a free port,
plain HTTP (Docker trusts loopback registries without TLS), no login. Its storage is a cache
directory kept between runs, ``$XDG_CACHE_HOME/deploy/registry/<app>`` (default
``~/.cache/deploy/registry/<app>``): `deploy build` pushes into it only the layers it lacks, and
`deploy rollout` reads the release's digest from it and serves it to each host through a reverse
port forward on that host's SSH connection (:meth:`deployer.transport.SSHTransport.forward`).

Nothing of a run outlives it: the registry's config goes to it on its standard input (no file is
written), its log goes to an unnamed temporary file, it starts in a session of its own (a Ctrl-C
in the terminal reaches `deploy` alone, which then stops it), and on Linux the kernel stops it
if `deploy` itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from deployer.errors import RegistryError

#: the registry's program: Debian's package name first, then upstream's binary
BINARIES = ("docker-registry", "registry")
LOOPBACK = "127.0.0.1"
#: seconds the registry has to answer after it starts (it takes about 0.1 s)
READY_TIMEOUT = 15.0
#: seconds it has to stop after SIGTERM before it is killed
STOP_TIMEOUT = 5.0
#: free ports tried, in case another program takes the one picked before the registry binds it
PORT_ATTEMPTS = 3
INSTALL_HINT = (
    "install the CNCF Distribution registry: `apt-get install docker-registry` on Debian or Ubuntu, "
    "or put its `registry` binary on PATH"
)


@dataclass(frozen=True)
class LocalRegistry:
    """A running registry on this machine's loopback: its port and where it keeps images."""

    port: int
    storage: Path

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as image names and URLs give it."""
        return f"{LOOPBACK}:{self.port}"


def cache_dir(app_name: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the app's images are kept between runs: ``$XDG_CACHE_HOME/deploy/registry/<app>``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if Path(base).is_absolute() else Path.home() / ".cache"
    return root / "deploy" / "registry" / app_name


def config(storage: Path, port: int, secret: str, *, writable: bool) -> str:
    """The registry's YAML config: *storage* on disk, plain HTTP on 127.0.0.1:*port*, quiet logs,
    read-only unless *writable* (only `deploy build` writes; what hosts reach refuses pushes).

    *secret* signs the state of uploads in progress; one per run is enough.
    """
    settings = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "maintenance": {"uploadpurging": {"enabled": False}, "readonly": {"enabled": not writable}},
        },
        "http": {"addr": f"{LOOPBACK}:{port}", "secret": secret},
        "health": {"storagedriver": {"enabled": False}},
    }
    return yaml.safe_dump(settings, sort_keys=False)


def find_binary(which: Callable[[str], str | None] = shutil.which) -> str:
    """The registry program on PATH; RegistryError naming what to install when there is none."""
    for name in BINARIES:
        found = which(name)
        if found:
            return found
    raise RegistryError(
        "app.registry is false, so deploy serves releases from a registry on this machine, "
        f"and neither {' nor '.join(BINARIES)} is on PATH",
        hint=INSTALL_HINT,
    )


def command(binary: str) -> list[str]:
    """How the registry is started: its config comes on standard input."""
    return [binary, "serve", "/dev/stdin"]


@contextlib.contextmanager
def serve(
    app_name: str,
    *,
    writable: bool = False,
    binary: str | None = None,
    environ: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[LocalRegistry]:
    """Run the app's registry for the length of the block, on a free port of 127.0.0.1;
    read-only unless *writable*."""
    program = binary or find_binary()
    storage = cache_dir(app_name, environ)
    try:
        storage.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(
            f"cannot make the local registry's storage {storage}: {exc.strerror or exc}",
            hint="set XDG_CACHE_HOME to a directory you can write",
        ) from exc
    with tempfile.TemporaryFile() as log:
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            process = _start(program, config(storage, port, secrets.token_hex(16), writable=writable), log)
            try:
                _wait_ready(process, port, ready_timeout, log)
            except _PortTaken:
                _stop(process)
                if attempt + 1 == PORT_ATTEMPTS:
                    raise RegistryError(
                        f"the local registry could not bind a free port of {LOOPBACK} "
                        f"in {PORT_ATTEMPTS} attempts"
                    ) from None
                continue
            except BaseException:
                _stop(process)
                raise
            try:
                yield LocalRegistry(port, storage)
            finally:
                _stop(process)
            return


class _PortTaken(Exception):
    """Another program took the port between its choice and the registry's start."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: the kernel sends the registry SIGTERM when `deploy` ends, even when killed."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(program: str, text: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    try:
        process = subprocess.Popen(
            command(program),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
            # each run starts it before it opens any connection, while it has one thread
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    except OSError as exc:
        raise RegistryError(
            f"cannot start the local registry {program}: {exc.strerror or exc}", hint=INSTALL_HINT
        ) from exc
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(text.encode())
    process.stdin.close()
    return process


def _wait_ready(process: subprocess.Popen[bytes], port: int, seconds: float, log: IO[bytes]) -> None:
    """Wait until the registry answers ``/v2/``; RegistryError with its last words if it ends or
    stays silent."""
    url = f"http://{LOOPBACK}:{port}/v2/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            said = _last_words(log)
            if "address already in use" in said:
                raise _PortTaken
            raise RegistryError(
                f"the local registry exited at once (status {process.returncode}): {said or 'no message'}"
            )
        try:
            with opener.open(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RegistryError(
                f"the local registry did not answer on {LOOPBACK}:{port} within {seconds:g} s: "
                f"{_last_words(log) or 'no message'}"
            )
        time.sleep(0.02)


def _last_words(log: IO[bytes]) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds; reaped either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
