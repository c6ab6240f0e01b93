"""`deploy init`: what it infers, the file it writes, and what it refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deployer import config, init
from deployer.errors import UsageError

from . import entrypoint

ROOT = Path(__file__).parents[2]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def repo_with_origin(path: Path, url: str | None) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    if url is not None:
        git(path, "remote", "add", "origin", url)
    return path


def deploy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, *args: str
) -> tuple[int, str, str]:
    """Run `deploy ARGS` in *cwd* as the entry point does: exit code, stdout, stderr."""
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("DEPLOY_INVENTORY", raising=False)
    return entrypoint.run(monkeypatch, capsys, *args)


# ---------------------------------------------------------------- pure functions


def test_the_example_file_is_the_template_rendered_for_the_example_app() -> None:
    example = (ROOT / "inventory.example.yaml").read_text()
    assert init.render("web", "registry.example.com:5000/acme/web") == example


def test_rendering_substitutes_name_image_server_and_volume_and_keeps_comments_aligned() -> None:
    text = init.render("shop-api", "ghcr.io/acme/shop-api")
    lines = text.splitlines()
    commented = {line[:46].rstrip(): line[46:] for line in lines if line[46:].startswith("# ")}
    assert commented["  name: shop-api"].startswith("# names containers, history, lock")
    assert commented["  image: ghcr.io/acme/shop-api"].startswith("# repository, no tag")
    assert commented['    volumes: ["shop-api-data:/var/data"]'].startswith("# named volumes")
    assert "    server: ghcr.io" in lines
    assert len(lines) == len((ROOT / "inventory.example.yaml").read_text().splitlines())
    inventory = config.parse(text)
    assert (inventory.app.name, inventory.app.image) == ("shop-api", "ghcr.io/acme/shop-api")
    assert inventory.app.registry is not None and inventory.app.registry.server == "ghcr.io"


def test_a_value_longer_than_the_comment_column_keeps_three_spaces_before_its_comment() -> None:
    image = "registry.example.com:5000/a-rather-long-group/web"
    text = init.render("web", image)
    assert f"  image: {image}   # repository, no tag" in text
    assert config.parse(text).app.image == image


def test_an_image_without_a_registry_host_is_on_docker_hub() -> None:
    assert "    server: docker.io\n" in init.render("web", "acme/web")


@pytest.mark.parametrize("name", ["1.0", "no", "null", "123"])
def test_names_yaml_would_read_as_something_else_are_quoted(name: str) -> None:
    text = init.render(name, f"registry.example.com/{name}")
    assert f'  name: "{name}"' in text
    assert config.parse(text).app.name == name


@pytest.mark.parametrize(
    ("directory", "name"),
    [
        ("web", "web"),
        ("My Web_App!", "my-web_app"),
        ("Ünïcode Straße", "unicode-strae"),
        ("__private", "private"),
        (".dotted.name", "dotted.name"),
        ("a--b", "a--b"),
        ("...", "app"),
        ("", "app"),
    ],
)
def test_app_name_is_the_directory_name_made_valid(directory: str, name: str) -> None:
    assert init.app_name(directory) == name


@pytest.mark.parametrize(
    ("url", "image"),
    [
        ("git@github.com:acme/web.git", "ghcr.io/acme/web"),
        ("git@github.com:Acme/Web.git", "ghcr.io/acme/web"),
        ("https://github.com/acme/web", "ghcr.io/acme/web"),
        ("https://github.com/acme/web.git/", "ghcr.io/acme/web"),
        ("https://deployer:s3cret@github.com/acme/web.git", "ghcr.io/acme/web"),
        ("ssh://git@github.com:22/acme/web.git", "ghcr.io/acme/web"),
        ("git@gitlab.com:acme/tools/web.git", "registry.gitlab.com/acme/tools/web"),
        ("https://gitlab.com/acme/web.git", "registry.gitlab.com/acme/web"),
        ("git@bitbucket.org:acme/web.git", None),
        ("https://git.example.com/acme/web.git", None),
        ("/srv/git/web.git", None),
        ("../web", None),
        ("git@github.com:acme.git", None),
        ("git@github.com:acme/.github.git", None),
    ],
)
def test_image_from_remote(url: str, image: str | None) -> None:
    assert init.image_from_remote(url) == image


@pytest.mark.parametrize(
    ("image", "server"),
    [
        ("ghcr.io/acme/web", "ghcr.io"),
        ("registry.example.com:5000/acme/web", "registry.example.com:5000"),
        ("localhost/web", "localhost"),
        ("acme/web", "docker.io"),
        ("web", "docker.io"),
    ],
)
def test_registry_server(image: str, server: str) -> None:
    assert config.registry_server(image) == server


def test_choose_infers_the_image_from_a_github_origin(tmp_path: Path) -> None:
    repo = repo_with_origin(tmp_path / "Shop API", "git@github.com:acme/shop.git")
    assert init.choose(repo, name=None, image=None) == init.Choice(
        "shop-api",
        "from the directory name 'Shop API'",
        "ghcr.io/acme/shop",
        "from the git remote origin git@github.com:acme/shop.git",
    )


def test_choose_never_repeats_credentials_of_the_remote(tmp_path: Path) -> None:
    repo = repo_with_origin(tmp_path / "web", "https://bot:s3cret@github.com/acme/web.git")
    choice = init.choose(repo, name=None, image=None)
    assert choice.image_from == "from the git remote origin https://github.com/acme/web.git"


def test_choose_falls_back_to_a_placeholder_and_says_why(tmp_path: Path) -> None:
    other = repo_with_origin(tmp_path / "web", "https://git.example.com/acme/web.git")
    assert init.choose(other, name=None, image=None).image_from == (
        "a placeholder: origin is not on GitHub or GitLab"
    )
    bare = repo_with_origin(tmp_path / "bare", None)
    choice = init.choose(bare, name="api", image=None)
    assert choice == init.Choice(
        "api", "from --name", "registry.example.com/api", "a placeholder: no git remote origin"
    )


def test_choose_takes_the_flags_over_what_it_infers(tmp_path: Path) -> None:
    repo = repo_with_origin(tmp_path / "web", "git@github.com:acme/web.git")
    assert init.choose(repo, name="shop", image="registry.acme.test/shop") == init.Choice(
        "shop", "from --name", "registry.acme.test/shop", "from --image"
    )


def test_an_invalid_name_flag_is_refused_with_a_valid_suggestion(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        init.choose(tmp_path, name="My App", image=None)
    assert raised.value.message == "--name 'My App' must be lower-case letters, digits, '.', '_' or '-'"
    assert raised.value.hint == "for example --name my-app"


def test_next_steps_ask_for_the_image_only_when_it_is_a_placeholder() -> None:
    inferred = init.Choice("web", "", "ghcr.io/acme/web", "from the git remote origin x")
    assert init.next_steps(Path("inventory.yaml"), inferred) == [
        "1. list your servers under hosts: in inventory.yaml, and how to log in to them under ssh:",
        "2. registry login: export DEPLOY_REGISTRY_PASSWORD, or drop app.registry and run docker login ghcr.io",
        "3. check app.proxy (host names, app port, TLS), app.container and app.healthcheck against your app",
        "4. deploy build, deploy push, then deploy rollout --hosts staging",
    ]
    placeholder = init.Choice("web", "", "registry.example.com/web", "a placeholder: no git remote origin")
    assert init.next_steps(Path("inventory.yaml"), placeholder)[1] == (
        "2. set app.image to your registry's repository (now registry.example.com/web)"
    )


# ---------------------------------------------------------------- the command


def test_init_writes_a_valid_commented_inventory_and_says_what_it_inferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_with_origin(tmp_path / "web", "git@github.com:acme/web.git")
    (repo / "Dockerfile").write_text('FROM python:3.12-slim\nCOPY . .\nCMD ["python", "app.py"]\n')
    code, out, err = deploy(monkeypatch, capsys, repo, "init")
    assert (code, out) == (0, "wrote inventory.yaml\n")
    assert err.splitlines() == [
        "  app.name   web (from the directory name 'web')",
        "  app.image  ghcr.io/acme/web (from the git remote origin git@github.com:acme/web.git)",
        "next:",
        *(
            f"  {step}"
            for step in init.next_steps(Path("inventory.yaml"), init.choose(repo, name=None, image=None))
        ),
    ]
    text = (repo / "inventory.yaml").read_text()
    assert text == init.render("web", "ghcr.io/acme/web")
    assert config.load(repo / "inventory.yaml").app.image == "ghcr.io/acme/web"


def test_init_quiet_prints_only_the_file_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_with_origin(tmp_path / "web", None)
    (repo / "Dockerfile").write_text('FROM python:3.12-slim\nCMD ["python"]\n')
    assert deploy(monkeypatch, capsys, repo, "-q", "init") == (0, "wrote inventory.yaml\n", "")


def test_init_warns_about_the_dockerfile_without_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_with_origin(tmp_path / "web", None)
    code, _, err = deploy(monkeypatch, capsys, repo, "init")
    assert code == 0
    assert f"warning: {repo / 'Dockerfile'}: no Dockerfile here; deploy build needs one\n" in err
    (repo / "inventory.yaml").unlink()
    (repo / "Dockerfile").write_text('FROM python\nCMD ["python"]\n')
    code, _, err = deploy(monkeypatch, capsys, repo, "init")
    assert code == 0
    assert "warning: Dockerfile:1: [from-latest] FROM python has no tag" in err


def test_init_never_overwrites_an_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_with_origin(tmp_path / "web", None)
    (repo / "inventory.yaml").write_text("mine\n")
    code, out, err = deploy(monkeypatch, capsys, repo, "init")
    assert (code, out) == (2, "")
    assert err == (
        "error: inventory.yaml already exists; deploy init never overwrites an inventory\n"
        "  hint: edit it, or move it away and run deploy init again\n"
    )
    assert (repo / "inventory.yaml").read_text() == "mine\n"


def test_init_has_no_force_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = deploy(monkeypatch, capsys, tmp_path, "init", "--force")
    assert code == 2
    assert err.startswith("error: No such option: --force")


def test_init_writes_where_the_inventory_option_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_with_origin(tmp_path / "web", None)
    code, out, _ = deploy(monkeypatch, capsys, repo, "-i", "staging.yaml", "init", "--name", "shop")
    assert (code, out) == (0, "wrote staging.yaml\n")
    assert config.load(repo / "staging.yaml").app.image == "registry.example.com/shop"


def test_init_refuses_an_image_with_a_tag_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = deploy(monkeypatch, capsys, tmp_path, "init", "--image", "ghcr.io/acme/web:1.0")
    assert code == 2
    assert err == (
        "error: the inventory would not be valid: inventory.yaml:7: app.image: "
        "'ghcr.io/acme/web:1.0' must be a repository without a tag or digest\n"
        "  hint: --image takes a repository without a tag, like ghcr.io/acme/web\n"
    )
    assert not (tmp_path / "inventory.yaml").exists()


def test_init_reports_a_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = deploy(monkeypatch, capsys, tmp_path, "-i", "nowhere/inventory.yaml", "init")
    assert (code, err) == (2, "error: nowhere: no such directory\n")
