"""The revision of a build, read from real git repositories made in tmp_path."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.errors import UsageError
from deployer.source import revision, strip_credentials

DATE = "2024-05-06T07:08:09+02:00"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env={"GIT_COMMITTER_DATE": DATE, "GIT_AUTHOR_DATE": DATE, "PATH": "/usr/bin:/bin", "HOME": str(repo)},
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit: app.py, README and a .gitignore that ignores *.log."""
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.invalid")
    (repo / "app.py").write_text("print('v1')\n")
    (repo / "README").write_text("readme\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    return repo


def test_clean_tree_is_tagged_with_the_first_12_hex_of_head(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    rev = revision(repo, allow_dirty=False)
    assert (rev.sha, rev.tag, rev.dirty_files) == (sha, sha[:12], ())
    assert rev.committed_at == DATE
    assert rev.source is None


def test_ignored_files_do_not_make_the_tree_dirty(repo: Path) -> None:
    (repo / "debug.log").write_text("noise\n")
    assert revision(repo, allow_dirty=False).dirty_files == ()


def test_source_is_the_origin_url_without_credentials(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "https://deployer:s3cret@git.example.com/acme/web.git")
    assert revision(repo, allow_dirty=False).source == "https://git.example.com/acme/web.git"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:token@github.com/acme/web.git", "https://github.com/acme/web.git"),
        ("https://token@github.com/acme/web", "https://github.com/acme/web"),
        ("ssh://git@git.example.com:2222/acme/web.git", "ssh://git.example.com:2222/acme/web.git"),
        ("https://github.com/acme/web.git", "https://github.com/acme/web.git"),
        ("git@github.com:acme/web.git", "git@github.com:acme/web.git"),
        ("/srv/git/web.git", "/srv/git/web.git"),
    ],
)
def test_strip_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda repo: (repo / "app.py").write_text("print('v2')\n"), id="modified"),
        pytest.param(
            lambda repo: ((repo / "app.py").write_text("print('v2')\n"), git(repo, "add", "app.py")),
            id="staged",
        ),
        pytest.param(lambda repo: (repo / "app.py").unlink(), id="deleted"),
        pytest.param(lambda repo: git(repo, "mv", "app.py", "main.py"), id="renamed"),
    ],
)
def test_uncommitted_changes_are_refused_and_named(repo: Path, change: Callable[[Path], object]) -> None:
    change(repo)
    with pytest.raises(UsageError) as caught:
        revision(repo, allow_dirty=False)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"uncommitted changes in {repo}: ")
    assert "app.py" in caught.value.message or "main.py" in caught.value.message
    assert caught.value.hint is not None and "--allow-dirty" in caught.value.hint


def test_untracked_files_count_as_uncommitted(repo: Path) -> None:
    (repo / "new dir").mkdir()
    (repo / "new dir" / "notes.txt").write_text("x\n")
    with pytest.raises(UsageError, match=r": new dir/notes\.txt$"):
        revision(repo, allow_dirty=False)


def test_a_long_list_of_files_is_cut_after_ten(repo: Path) -> None:
    for index in range(13):
        (repo / f"f{index:02}.txt").write_text("x\n")
    with pytest.raises(UsageError) as caught:
        revision(repo, allow_dirty=False)
    assert caught.value.message.endswith(": " + ", ".join(f"f{i:02}.txt" for i in range(10)) + " and 3 more")


DIRTY_TAG = re.compile(r"^[0-9a-f]{12}-dirty-[0-9a-f]{8}$")


def test_allow_dirty_tags_the_changes_and_lists_them(repo: Path) -> None:
    (repo / "app.py").write_text("print('v2')\n")
    (repo / "extra.txt").write_text("x\n")
    rev = revision(repo, allow_dirty=True)
    assert DIRTY_TAG.match(rev.tag), rev.tag
    assert rev.tag.startswith(git(repo, "rev-parse", "HEAD")[:12] + "-dirty-")
    assert rev.dirty_files == ("app.py", "extra.txt")


def test_same_changes_give_the_same_tag_and_other_changes_another(repo: Path) -> None:
    (repo / "app.py").write_text("print('v2')\n")
    first = revision(repo, allow_dirty=True).tag
    (repo / "app.py").write_text("print('v2')\n")  # rewritten, same content
    assert revision(repo, allow_dirty=True).tag == first
    git(repo, "add", "app.py")  # staged or not, the change is the same
    assert revision(repo, allow_dirty=True).tag == first
    (repo / "app.py").write_text("print('v3')\n")
    assert revision(repo, allow_dirty=True).tag != first


def test_untracked_content_is_part_of_the_dirty_tag(repo: Path) -> None:
    (repo / "extra.txt").write_text("one\n")
    first = revision(repo, allow_dirty=True).tag
    (repo / "extra.txt").write_text("two\n")
    second = revision(repo, allow_dirty=True).tag
    (repo / "extra.txt").rename(repo / "other.txt")
    third = revision(repo, allow_dirty=True).tag
    assert len({first, second, third}) == 3
    (repo / "other.txt").rename(repo / "extra.txt")
    assert revision(repo, allow_dirty=True).tag == second


def test_only_the_build_context_counts(repo: Path) -> None:
    (repo / "web").mkdir()
    (repo / "web" / "index.html").write_text("v1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "web")
    (repo / "README").write_text("edited, outside the context\n")
    assert revision(repo / "web", allow_dirty=False).dirty_files == ()
    (repo / "web" / "index.html").write_text("v2\n")
    with pytest.raises(UsageError, match=r": web/index\.html$"):
        revision(repo / "web", allow_dirty=False)


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        revision(tmp_path, allow_dirty=False)
    assert (
        caught.value.message == f"{tmp_path} is not in a git repository: each image is tagged with its commit"
    )
    assert caught.value.hint == "run `git init` there, then commit your code"


def test_repository_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(UsageError, match="the repository has no commits yet"):
        revision(tmp_path, allow_dirty=False)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        revision(tmp_path / "nope", allow_dirty=False)


def test_git_not_installed(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo))
    with pytest.raises(UsageError, match="git is not installed"):
        revision(repo, allow_dirty=False)
