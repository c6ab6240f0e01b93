"""Collect the WebSocket sample app's run time from the lab host image (run inside it).

    python3 collect.py SRC OUT

SRC holds server.py and the pure-Python `websockets` package. The server runs here once,
answers every kind of request it serves and stops on SIGTERM, listing the modules it
loaded; OUT then gets `app/` (server.py, websockets) and `rootfs/`: the python binary,
only the standard library modules and shared libraries the server used, and bytecode that
never goes stale (unchecked-hash .pyc), so a `FROM scratch` image can run it.
"""

from __future__ import annotations

import compileall
import contextlib
import importlib.util
import os
import py_compile
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.dont_write_bytecode = True
PYTHON = Path(os.path.realpath(sys.executable))
PORT = 8080
# Loaded only on paths the trace may not take (an error's traceback, an unusual encoding).
EXTRA_MODULES = ("traceback", "linecache", "tokenize", "token", "encodings.idna",
                 "encodings.ascii", "encodings.latin_1", "stringprep", "unicodedata")


def http(request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def get(path: str) -> bytes:
    return http(f"GET {path} HTTP/1.1\r\nHost: trace\r\n\r\n".encode())


def exercise(app: Path, stop: Callable[[], None]) -> None:
    sys.path.insert(0, str(app))
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    assert get("/health").startswith(b"HTTP/1.1 200 "), get("/health")
    assert get("/version").endswith(b"trace\n")
    assert get("/slow?0.1").endswith(b"trace\n")
    assert get("/nothing").startswith(b"HTTP/1.1 404 ")
    http(b"NOT HTTP\r\n\r\n")
    for compression in ("deflate", None):
        with connect(f"ws://127.0.0.1:{PORT}/ws", compression=compression) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "trace:hello"
    check = subprocess.run([str(PYTHON), "-S", str(app / "server.py"), "check"], check=False)
    assert check.returncode == 0, "server.py check failed"
    with connect(f"ws://127.0.0.1:{PORT}/ws") as held:  # open at SIGTERM: closed with 1001
        held.send("hold")
        held.recv(timeout=10)
        stop()
        with contextlib.suppress(ConnectionClosed):
            held.recv(timeout=10)
        assert held.close_code == 1001, f"closed with {held.close_code}, not 1001 (going away)"


def loaded_modules(app: Path, dump: Path) -> list[str]:
    env = {**os.environ, "APP_DUMP_MODULES": str(dump), "PYTHONDONTWRITEBYTECODE": "1"}
    server = subprocess.Popen([str(PYTHON), "-S", str(app / "server.py")], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.1)
    try:
        exercise(app, lambda: server.send_signal(signal.SIGTERM))
    except BaseException:
        server.kill()
        raise
    code = server.wait(timeout=30)
    assert code == 0, f"the server exited with {code} on SIGTERM"
    return dump.read_text().split()


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries `binary` loads, with the dynamic loader, as the loader looks them up."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    return [Path(path) for path in re.findall(r"(/\S+) \(0x", out)]


def copy(source: Path, rootfs: Path) -> None:
    """Copy a file's content to the same absolute path under rootfs (links resolved)."""
    target = rootfs / str(source).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(os.path.realpath(source), target)
    shutil.copymode(os.path.realpath(source), target)


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    app, rootfs = out / "app", out / "rootfs"
    for directory in (app, rootfs):
        shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(src / "websockets", app / "websockets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.pyi", "py.typed"))
    shutil.copyfile(src / "server.py", app / "server.py")
    (app / "version").write_text("trace\n")
    (app / "mode").write_text("ok\n")

    files = {Path(f) for f in loaded_modules(app, out / "modules.txt")}
    stdlib = Path(os.__file__).parent
    for name in EXTRA_MODULES:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin and spec.origin.startswith(str(stdlib)):
            files.add(Path(spec.origin))
    files.add(stdlib / "os.py")  # the landmark python finds its prefix by
    files = {f for f in files if f.is_relative_to(stdlib)}
    for package in {p for f in files for p in f.parents if p.is_relative_to(stdlib) and p != stdlib}:
        if (package / "__init__.py").exists():
            files.add(package / "__init__.py")
    binaries = [PYTHON, *(f for f in files if f.suffix == ".so")]
    libraries = {lib for binary in binaries for lib in shared_libraries(binary)}
    # glibc loads libgcc_s when a thread exits (pthread_exit), not at start: ldd misses it.
    libc = next(lib for lib in libraries if lib.name == "libc.so.6")
    libraries.add(libc.with_name("libgcc_s.so.1"))
    for path in libraries | set(files) | {PYTHON}:
        copy(path, rootfs)
    (out / "modules.txt").unlink()

    for tree, prefix in ((rootfs, "/"), (app, "/app")):
        ok = compileall.compile_dir(str(tree), quiet=1, stripdir=str(tree), prependdir=prefix,
                                    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        assert ok, f"compiling {tree} failed"
    (out / "python").write_text(str(PYTHON) + "\n")


if __name__ == "__main__":
    main()
