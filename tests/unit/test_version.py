"""`deploy version`: the version and commit of a build, of a git checkout, and of neither."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from deployer import version

ROOT = Path(__file__).parents[2]


def written(monkeypatch: pytest.MonkeyPatch, **values: object) -> None:
    """Pretend the build wrote `deployer/_version.py` with these values."""
    module = types.ModuleType("deployer._version")
    for key, value in values.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, "deployer._version", module)


def test_a_built_release_says_its_version_and_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    written(monkeypatch, version="0.2.0", commit="gabc123def456")
    assert str(version.built()) == "0.2.0 (commit abc123def456)"


def test_a_build_without_a_commit_says_only_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    written(monkeypatch, version="0.1.dev0", commit=None)
    assert str(version.built()) == "0.1.dev0"


def test_without_build_output_the_fallback_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deployer._version", None)  # import raises ImportError
    assert version.built() == version.Version(version.FALLBACK)


@pytest.mark.parametrize(("node", "commit"), [("g850f891b8", "850f891b8"), ("850f891b84fb", "850f891b84fb"),
                                               ("", None), (None, None), ("gXYZ", None)])
def test_commit_of_a_setuptools_scm_node(node: object, commit: str | None) -> None:
    assert version.commit_of(node) == commit


def test_a_directory_outside_git_is_no_checkout(tmp_path: Path) -> None:
    assert version.from_checkout(tmp_path) is None


def test_a_checkout_without_tags_still_has_a_version_and_its_commit(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "one")
    found = version.from_checkout(tmp_path)
    assert found is not None
    assert found.commit == git("rev-parse", "--short=12", "HEAD")
    assert found.version.startswith("0.1.dev1")


def test_the_package_attribute_is_the_version() -> None:
    import deployer

    assert deployer.__version__ == version.describe().version
    with pytest.raises(AttributeError):
        _ = deployer.no_such_attribute  # type: ignore[attr-defined]
