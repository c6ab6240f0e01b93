"""The WebSocket sample app: a git repository whose `FROM scratch` image runs
wsimage/server.py (HTTP and WebSocket on port 8080) with the `websockets` package.

Its run time (python and only the standard library modules and shared libraries the
server uses, about 24 MB) comes from the lab host image: wsimage/collect.py runs there once
and the result is cached in the lab's state dir, so building the app needs no network.

    runtime = build_runtime(client, host_image, cache_dir)
    init_ws_repo(repo, inventory_text, runtime)        # v1, mode ok
    commit_ws_app(repo, "v2", mode="ignore-sigterm")
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from pathlib import Path

import docker
import docker.errors

from .app import _git, new_repo, reset_app_repo

__all__ = ["MODES", "build_runtime", "commit_ws_app", "init_ws_repo", "reset_app_repo"]

MODES = ("ok", "unhealthy", "slow", "ignore-sigterm")
SOURCE_DIR = Path(__file__).with_name("wsimage")
PORT = 8080

_DOCKERFILE = """\
FROM scratch
COPY rootfs /
COPY app /app
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
HEALTHCHECK --interval=2s --timeout=3s --retries=2 CMD ["{python}", "-S", "/app/server.py", "check"]
EXPOSE 8080
ENTRYPOINT ["{python}", "-S", "/app/server.py"]
"""


def _websockets_dir() -> Path:
    spec = importlib.util.find_spec("websockets")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the WebSocket sample app needs the websockets package: "
                           "pip install -e '.[test]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _runtime_key(host_image: str) -> str:
    digest = hashlib.sha256(host_image.encode())
    for path in sorted(SOURCE_DIR.iterdir()):
        if path.suffix == ".py":
            digest.update(path.name.encode() + path.read_bytes())
    for path in sorted(_websockets_dir().rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_runtime(client: docker.DockerClient, host_image: str, cache_dir: Path) -> Path:
    """The app's files (`app/`, `rootfs/`, `python`) collected in the host image; cached
    in cache_dir under a hash of the host image, the sources and the websockets package."""
    runtime = cache_dir / f"wsapp-runtime-{_runtime_key(host_image)}"
    if (runtime / "python").is_file():
        return runtime
    for old in cache_dir.glob("wsapp-runtime-*"):
        shutil.rmtree(old, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wsapp-", dir=cache_dir) as work:
        src, out = Path(work) / "src", Path(work) / "out"
        shutil.copytree(_websockets_dir(), src / "websockets",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in SOURCE_DIR.glob("*.py"):
            shutil.copyfile(path, src / path.name)
        out.mkdir()
        try:
            client.containers.run(
                host_image, ["/src/collect.py", "/src", "/out"], entrypoint="/usr/bin/python3",
                network_mode="none", remove=True, stdout=True, stderr=True,
                volumes={str(src): {"bind": "/src", "mode": "ro"},
                         str(out): {"bind": "/out", "mode": "rw"}})
        except docker.errors.ContainerError as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            raise RuntimeError(f"collecting the WebSocket app's run time failed:\n{stderr}") from exc
        out.rename(runtime)
    return runtime


def _write_tree(repo: Path, version: str, mode: str, slow_seconds: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    (repo / "app" / "version").write_text(f"{version}\n")
    (repo / "app" / "mode").write_text(f"{mode} {slow_seconds}\n" if mode == "slow" else f"{mode}\n")


def commit_ws_app(repo: Path, version: str, mode: str = "ok", slow_seconds: int = 8) -> str:
    """Commit a new version of the WebSocket app and return the full commit sha.

    mode: "ok"; "unhealthy" (/health answers 500); "slow" (/health answers 503 for the
    first `slow_seconds`); "ignore-sigterm" (the server ignores SIGTERM, so only SIGKILL
    stops it).
    """
    _write_tree(repo, version, mode, slow_seconds)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", f"chat {version} ({mode})")
    return _git(repo, "rev-parse", "HEAD")


def init_ws_repo(repo: Path, inventory_text: str, runtime: Path) -> str:
    """Create the WebSocket app's repository with its first commit (v1, ok); return its sha."""
    new_repo(repo)
    shutil.copytree(runtime / "rootfs", repo / "rootfs", symlinks=True)
    shutil.copytree(runtime / "app", repo / "app", symlinks=True)
    python = (runtime / "python").read_text().strip()
    (repo / "Dockerfile").write_text(_DOCKERFILE.format(python=python))
    (repo / ".dockerignore").write_text(".git\ninventory.yaml\n")
    (repo / "inventory.yaml").write_text(inventory_text)
    return commit_ws_app(repo, "v1")

