"""The sample app: a git repository holding a `FROM scratch` busybox web server."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

MODES = ("ok", "unhealthy", "crash", "slow")
BUSYBOX = Path("/bin/busybox")
HTTPD = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]

_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY www /www
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/bin/busybox","wget","-q","-O","/dev/null","http://127.0.0.1:8080/health"]
EXPOSE 8080
ENTRYPOINT {entrypoint}
"""

# CGI scripts run by busybox httpd: /cgi-bin/env?NAME prints $NAME, /cgi-bin/data prints
# /data/value, /cgi-bin/secret?NAME prints the Swarm secret /run/secrets/NAME,
# /cgi-bin/slow?SECONDS prints the version after sleeping SECONDS (whole, at most 10).
_CGI_HEAD = '#!/bin/busybox sh\necho "Content-Type: text/plain"\necho\n'
_NAME_ONLY = 'case "$QUERY_STRING" in ""|*[!A-Za-z0-9_]*) exit 0 ;; esac\n'
MAX_SLOW = 10
# slow sleeps before the headers: the status line comes only with the answer.
_SLOW = ('#!/bin/busybox sh\n'
         f'case "$QUERY_STRING" in ""|*[!0-9]*) s=0 ;; ?|??) s=$QUERY_STRING ;; *) s={MAX_SLOW} ;; esac\n'
         f'if [ "$s" -gt {MAX_SLOW} ]; then s={MAX_SLOW}; fi\n'
         '/bin/busybox sleep "$s"\n' + _CGI_HEAD.split("\n", 1)[1] + '/bin/busybox cat /www/version\n')
_CGI = {
    "env": _CGI_HEAD + _NAME_ONLY + r'eval "echo \"\${$QUERY_STRING-}\""' "\n",
    "data": _CGI_HEAD + "if [ -f /data/value ]; then /bin/busybox cat /data/value; fi\n",
    "secret": _CGI_HEAD + _NAME_ONLY + 'f="/run/secrets/$QUERY_STRING"; if [ -f "$f" ]; then /bin/busybox cat "$f"; fi\n',
    "slow": _SLOW,
}


def _entrypoint(mode: str, slow_seconds: int) -> str:
    """The Dockerfile ENTRYPOINT line (JSON form) for a mode."""
    if mode == "crash":
        # Serve briefly in the background, then exit as if the app crashed.
        script = "/bin/busybox httpd -p 8080 -h /www && /bin/busybox sleep 3 && exit 1"
    elif mode == "slow":
        # /health appears only after slow_seconds.
        script = (f"(/bin/busybox sleep {slow_seconds} && echo ok >/www/health) & "
                  f"exec {' '.join(HTTPD)}")
    else:
        return _json_list(HTTPD)
    return _json_list(["/bin/busybox", "sh", "-c", script])


def _json_list(items: list[str]) -> str:
    return json.dumps(items, separators=(",", ":"))


def recipe() -> str:
    """A hash of this module: a lab whose app repository was made from another needs a new one."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _write_tree(repo: Path, version: str, mode: str, slow_seconds: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    www = repo / "www"
    (www / "cgi-bin").mkdir(parents=True, exist_ok=True)
    (repo / "Dockerfile").write_text(_DOCKERFILE.format(entrypoint=_entrypoint(mode, slow_seconds)))
    (www / "index.html").write_text(f"<html><body><h1>web {version}</h1></body></html>\n")
    (www / "version").write_text(f"{version}\n")
    health = www / "health"
    if mode in ("unhealthy", "slow"):
        health.unlink(missing_ok=True)
    else:
        health.write_text("ok\n")
    for name, body in _CGI.items():
        script = www / "cgi-bin" / name
        script.write_text(body)
        script.chmod(0o755)


def commit_app(repo: Path, version: str, mode: str = "ok", slow_seconds: int = 8) -> str:
    """Commit a new version of the app and return the full commit sha.

    mode: "ok" (healthy), "unhealthy" (/health answers 404), "crash" (the container
    exits about 3 s after start) or "slow" (/health answers only after `slow_seconds`).
    """
    _write_tree(repo, version, mode, slow_seconds)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", f"web {version} ({mode})")
    return _git(repo, "rev-parse", "HEAD")


def new_repo(repo: Path) -> None:
    """An empty git repository at `repo` (replacing whatever was there), committing as the lab."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    for key, value in (("user.name", "Deploy Lab"), ("user.email", "lab@deploy-lab.invalid"),
                       ("commit.gpgsign", "false")):
        _git(repo, "config", key, value)


def init_app_repo(repo: Path, inventory_text: str) -> str:
    """Create the app repository with its first commit (v1, ok); return its sha."""
    new_repo(repo)
    shutil.copy2(BUSYBOX, repo / "busybox")
    (repo / ".dockerignore").write_text(".git\n")
    (repo / "inventory.yaml").write_text(inventory_text)
    return commit_app(repo, "v1")


def reset_app_repo(repo: Path, commit: str) -> None:
    """Put the repository back to `commit` with a clean work tree."""
    _git(repo, "checkout", "-q", "-f", "main")
    _git(repo, "reset", "-q", "--hard", commit)
    _git(repo, "clean", "-q", "-fdx")
