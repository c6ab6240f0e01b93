"""The commit an image is built from: its tag, its date, and whether the tree is clean.

Git runs as a subprocess with argument lists; its failures become ``UsageError``.
Only the build context (``repo_dir`` and below) counts: a change elsewhere in the
repository does not change the image, so it does not make the build dirty.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from deployer.errors import UsageError

SHORT_SHA = 12
DIRTY_HASH = 8
LISTED_FILES = 10


@dataclass(frozen=True)
class Revision:
    """The commit an image is built from, and the uncommitted changes built with it."""

    sha: str
    tag: str
    dirty_files: tuple[str, ...]
    committed_at: str
    source: str | None


def revision(repo_dir: Path, *, allow_dirty: bool) -> Revision:
    """Describe HEAD of the repository holding *repo_dir*; refuse uncommitted changes unless allowed."""
    if not repo_dir.is_dir():
        raise UsageError(f"{repo_dir}: no such directory", hint="check app.build.context")
    probe = _run(repo_dir, "rev-parse", "--is-inside-work-tree")
    if probe.returncode != 0:
        if b"not a git repository" in probe.stderr:
            raise UsageError(
                f"{repo_dir} is not in a git repository: each image is tagged with its commit",
                hint="run `git init` there, then commit your code",
            )
        raise UsageError(f"git cannot read {repo_dir}: {_last_line(probe.stderr)}")
    if _run(repo_dir, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").returncode != 0:
        raise UsageError(f"{repo_dir}: the repository has no commits yet", hint="commit your code first")
    sha, committed_at = _git(repo_dir, "show", "--no-patch", "--format=%H%n%cI", "HEAD").decode().split()
    source = origin_url(repo_dir)
    dirty = dirty_files(repo_dir)
    if not dirty:
        return Revision(sha, sha[:SHORT_SHA], (), committed_at, source)
    if not allow_dirty:
        shown = ", ".join(dirty[:LISTED_FILES])
        more = f" and {len(dirty) - LISTED_FILES} more" if len(dirty) > LISTED_FILES else ""
        raise UsageError(
            f"uncommitted changes in {repo_dir}: {shown}{more}",
            hint="commit or stash them, or pass --allow-dirty to build them under a -dirty- tag",
        )
    tag = f"{sha[:SHORT_SHA]}-dirty-{changes_hash(repo_dir)[:DIRTY_HASH]}"
    return Revision(sha, tag, dirty, committed_at, source)


def dirty_files(repo_dir: Path) -> tuple[str, ...]:
    """Modified, staged and untracked (not ignored) files under *repo_dir*, relative to the repository."""
    out = _git(repo_dir, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", ".")
    fields = iter(out.decode(errors="replace").split("\0"))
    files = set()
    for entry in fields:
        if not entry:
            continue
        files.add(entry[3:])
        if entry[0] in "RC":  # a rename or copy is followed by its original path
            next(fields, None)
    return tuple(sorted(files))


def changes_hash(repo_dir: Path) -> str:
    """sha256 over the uncommitted changes under *repo_dir*: the diff against HEAD and untracked files."""
    digest = hashlib.sha256()
    diff_flags = ("--binary", "--no-ext-diff", "--no-textconv", "--no-color")
    digest.update(_git(repo_dir, "diff", "HEAD", *diff_flags, "--", "."))
    listing = _git(repo_dir, "ls-files", "--others", "--exclude-standard", "-z", "--", ".")
    for name in sorted(part for part in listing.split(b"\0") if part):
        content = _content(repo_dir / os.fsdecode(name))
        digest.update(b"\0untracked\0" + name + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def origin_url(repo_dir: Path) -> str | None:
    """The URL of the git remote ``origin`` of *repo_dir*'s repository, without credentials; None if none."""
    url = _run(repo_dir, "config", "--get", "remote.origin.url").stdout.decode().strip()
    return strip_credentials(url) if url else None


def strip_credentials(url: str) -> str:
    """*url* without the user and password a remote URL may carry (scp-like addresses are kept)."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _content(path: Path) -> bytes:
    """An untracked entry's content: a symlink's target, a file's bytes, nothing for a directory."""
    try:
        if path.is_symlink():
            return os.fsencode(os.readlink(path))
        return b"" if path.is_dir() else path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the untracked file {path}: {exc.strerror}") from exc


def _git(repo_dir: Path, *args: str) -> bytes:
    """stdout of `git -C repo_dir ARGS`; a failure is a UsageError with git's reason."""
    done = _run(repo_dir, *args)
    if done.returncode != 0:
        raise UsageError(f"git {args[0]} failed in {repo_dir}: {_last_line(done.stderr)}")
    return done.stdout


def _run(repo_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo_dir), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise UsageError(
            "git is not installed: it is needed to tag the image with its commit",
            hint="install git, or put it on PATH",
        ) from exc


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no reason given"
