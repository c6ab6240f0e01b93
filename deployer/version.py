"""The version of deploy and the commit it was built from.

A built distribution (wheel, sdist, editable install) carries both in `deployer/_version.py`,
which setuptools-scm writes at build time from the last git tag. A git checkout (run as
`python -m deployer` with PYTHONPATH, or installed in editable mode) asks git instead, so the
answer follows the checked-out commit rather than the one it was installed at.

Only `deploy version` imports this module: `deploy --help` never runs git.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The version of a tree without git metadata or build output; setuptools-scm's fallback_version.
FALLBACK = "0.1.dev0"

_NODE = re.compile(r"g?([0-9a-f]{7,40})")


@dataclass(frozen=True)
class Version:
    """A version and the commit it came from, when known."""

    version: str
    commit: str | None = None

    def __str__(self) -> str:
        return f"{self.version} (commit {self.commit})" if self.commit else self.version


def commit_of(node: object) -> str | None:
    """The commit hash in setuptools-scm's node (`g1a2b3c4d`), or None when it is not one."""
    found = _NODE.fullmatch(node) if isinstance(node, str) else None
    return found.group(1) if found else None


def built() -> Version:
    """What the build wrote into `deployer/_version.py`, or the fallback when there is none."""
    try:
        written = importlib.import_module("deployer._version")
    except ImportError:
        return Version(FALLBACK)
    version = getattr(written, "version", None)
    return Version(version if isinstance(version, str) and version else FALLBACK,
                   commit_of(getattr(written, "commit", None)))


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def from_checkout(root: Path) -> Version | None:
    """The version of the git checkout at `root` (setuptools-scm's, when it is installed), or None."""
    commit = _git(root, "rev-parse", "--short=12", "HEAD")
    if commit is None:
        return None
    try:
        import setuptools_scm
    except ImportError:
        return Version(built().version, commit)
    try:
        version = setuptools_scm.get_version(root=str(root), fallback_version=FALLBACK)
    except Exception:  # any failure of the optional helper leaves the built version; the commit is known
        version = built().version
    return Version(str(version), commit)


def describe() -> Version:
    """The version of the code that is running, and its commit."""
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():
        found = from_checkout(root)
        if found is not None:
            return found
    return built()
