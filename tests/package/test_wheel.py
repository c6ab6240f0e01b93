"""The artefacts a release uploads: `python -m build` makes a wheel and an sdist, `twine check`
accepts them, and the wheel, installed into a fresh virtual environment, runs `deploy`.

A file left out of the wheel, a broken entry point or a dependency import that is not declared
fails here rather than on a user's machine. The build runs once per session (about 15 s; it
fetches setuptools and setuptools-scm from PyPI into an isolated build environment).
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.package

ROOT = Path(__file__).parents[2]
NAME = "deploy-fleet"
VERBS = ("version", "init", "lint", "build", "push", "rollout", "rollback", "status", "history")


@dataclass(frozen=True)
class Dist:
    """The built artefacts."""

    wheel: Path
    sdist: Path

    def metadata(self) -> email.message.Message:
        with zipfile.ZipFile(self.wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            return email.parser.Parser().parsestr(archive.read(name).decode())


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          check=False)


def normalized(name: str) -> str:
    """A distribution name as PyPI compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def tracked(under: str) -> list[str]:
    return run("git", "-C", ROOT, "ls-files", under).stdout.split()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--outdir", out, ROOT, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist)


@dataclass(frozen=True)
class Venv:
    """A virtual environment with the wheel installed."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"


@pytest.fixture(scope="module")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    root = tmp_path_factory.mktemp("venv")
    made = run(sys.executable, "-m", "venv", "--without-pip", root)
    assert made.returncode == 0, made.stderr
    env = Venv(root)
    python = env.bin / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # The dependencies come from this interpreter's site-packages, added as a plain path: its .pth
    # files (an editable install of this checkout among them) are not run, so `deployer` can only
    # come from the wheel. Resolving the dependencies from PyPI would take a minute here.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                    "--disable-pip-version-check", "--quiet", dist.wheel)
    assert installed.returncode == 0, installed.stderr
    yield env


def test_twine_accepts_the_wheel_and_the_sdist(dist: Dist) -> None:
    checked = run(sys.executable, "-m", "twine", "check", "--strict", dist.wheel, dist.sdist)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_distribution_is_deploy_fleet_with_the_deploy_command(dist: Dist) -> None:
    metadata = dist.metadata()
    assert metadata["Name"] == NAME
    assert metadata["Description-Content-Type"] == "text/markdown"
    with zipfile.ZipFile(dist.wheel) as archive:
        entry_points = next(archive.read(n).decode() for n in archive.namelist()
                            if n.endswith(".dist-info/entry_points.txt"))
    assert "[console_scripts]\ndeploy = deployer.cli:main" in entry_points


def test_the_wheel_holds_every_module_and_no_tests(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as archive:
        names = set(archive.namelist())
    missing = [path for path in tracked("deployer") if path not in names]
    assert missing == []
    assert "deployer/_version.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/"))]


def test_the_sdist_holds_the_sources_and_the_changelog(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        names = {name.removeprefix(top + "/") for name in archive.getnames()}
    wanted = {"pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO", *tracked("deployer")}
    assert wanted - names == set()


def test_the_wheel_declares_every_package_its_code_imports(dist: Dist) -> None:
    declared = {normalized(re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0])
                for line in dist.metadata().get_all("Requires-Dist") or [] if "extra ==" not in line}
    providers = importlib.metadata.packages_distributions()
    optional = {"setuptools_scm"}  # deployer.version uses it only when it is there
    declared |= {"pydantic-core"} if "pydantic" in declared else set()  # pydantic pins its own core
    needed: dict[str, set[str]] = {}
    for path in tracked("deployer"):
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in ("deployer", "__future__") or top in optional:
                    continue
                needed.setdefault(top, set()).update(normalized(d) for d in providers.get(top, [top]))
    undeclared = {top: dists for top, dists in needed.items() if not dists & declared}
    assert undeclared == {}
    assert {"docker", "paramiko", "typer", "rich", "yaml", "pydantic"} <= needed.keys()


def test_deploy_help_from_the_installed_wheel(venv: Venv, tmp_path: Path) -> None:
    done = run(venv.bin / "deploy", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage: deploy" in done.stdout
    listed = {line.split()[0] for line in done.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 1 for line in [line.strip("│ ")]}
    assert set(VERBS) <= listed, done.stdout


def test_deploy_version_from_the_installed_wheel_names_the_build_and_its_commit(
    venv: Venv, dist: Dist, tmp_path: Path
) -> None:
    done = run(venv.bin / "deploy", "version", cwd=tmp_path)  # outside any git checkout
    assert (done.returncode, done.stderr) == (0, "")
    head = run("git", "-C", ROOT, "rev-parse", "HEAD").stdout.strip()
    found = re.fullmatch(r"deploy (\S+) \(commit ([0-9a-f]{7,40})\)\n", done.stdout)
    assert found, done.stdout
    assert found.group(1) == dist.metadata()["Version"]
    assert head.startswith(found.group(2))


def test_the_installed_package_is_the_wheel_not_this_checkout(venv: Venv, tmp_path: Path) -> None:
    done = run(venv.bin / "python", "-c", "import deployer.cli, deployer.config; "
               "print(deployer.cli.__file__); print(deployer.config.__file__)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert all(Path(line).is_relative_to(venv.root) for line in done.stdout.split()), done.stdout
