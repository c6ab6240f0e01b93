"""`deploy build` and `deploy push` on the real engine and the lab's TLS + htpasswd registry."""

from __future__ import annotations

import re
import subprocess

import pytest
from pydantic import SecretStr

from deployer import config, registry
from deployer.errors import RegistryError, TagNotFound
from tests.e2e.support import Result, deploy, ok
from tests.lab import Lab

pytestmark = pytest.mark.e2e

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def git(lab: Lab, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(lab.app_repo), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def head(lab: Lab) -> str:
    return git(lab, "rev-parse", "HEAD")


def built(result: Result) -> str:
    """The reference `deploy build` printed."""
    return ok(result).stdout.strip().splitlines()[-1]


def image_id(lab: Lab, reference: str) -> str:
    return str(lab.client.images.get(reference).id)


def test_build_tags_the_commit_labels_it_and_rebuilds_from_cache(clean_lab: Lab) -> None:
    lab = clean_lab
    sha = head(lab)
    first = deploy(lab, "build")
    reference = built(first)
    assert reference == f"{lab.registry}/acme/web:{sha[:12]}"
    assert "Step 1/" in first.stderr and "FROM scratch" in first.stderr

    labels = lab.client.images.get(reference).labels
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["org.opencontainers.image.created"] == git(lab, "show", "-s", "--format=%cI", "HEAD")
    assert labels["org.opencontainers.image.version"] == sha[:12]
    assert labels["org.opencontainers.image.title"] == "web"
    assert "org.opencontainers.image.source" not in labels, "the lab repository has no origin"

    first_id = image_id(lab, reference)
    again = deploy(lab, "-v", "build")
    assert built(again) == reference
    assert "Using cache" in again.stderr
    assert image_id(lab, reference) == first_id, "same commit, same labels: the cache gives the same image"


def test_dirty_tree_is_refused_unless_allowed(clean_lab: Lab) -> None:
    lab = clean_lab
    (lab.app_repo / "www" / "index.html").write_text("<h1>work in progress</h1>\n")
    (lab.app_repo / "scratch.txt").write_text("notes\n")

    refused = deploy(lab, "build")
    assert refused.code == 2, refused.output
    assert "uncommitted changes" in refused.stderr
    assert "scratch.txt" in refused.stderr and "www/index.html" in refused.stderr
    assert "--allow-dirty" in refused.stderr

    reference = built(deploy(lab, "build", "--allow-dirty"))
    assert re.fullmatch(
        rf"{re.escape(lab.registry)}/acme/web:{head(lab)[:12]}-dirty-[0-9a-f]{{8}}", reference
    )
    assert built(deploy(lab, "build", "--allow-dirty")) == reference, "same changes, same tag"


def test_a_dockerfile_that_does_not_build_names_the_failed_step(clean_lab: Lab) -> None:
    lab = clean_lab
    dockerfile = lab.app_repo / "Dockerfile"
    lines = dockerfile.read_text().splitlines(keepends=True)
    lines.insert(3, 'RUN ["/bin/busybox", "sh", "-c", "echo checking; exit 3"]\n')
    dockerfile.write_text("".join(lines))
    git(lab, "commit", "-q", "-am", "a step that fails")

    result = deploy(lab, "build")
    assert result.code == 3, result.output
    assert re.search(
        r'error: step 4/\d+ RUN \["/bin/busybox", "sh", "-c", "echo checking; exit 3"\]: '
        r"the command '.*' returned a non-zero code: 3",
        result.stderr,
    ), result.stderr
    assert "    checking" in result.stderr, "the output of the failed step is shown"


def test_push_prints_the_digest_and_a_second_push_sends_nothing(clean_lab: Lab) -> None:
    lab = clean_lab
    reference = built(deploy(lab, "build"))

    first = ok(deploy(lab, "push"))
    line = first.stdout.strip()
    assert line.startswith(reference + "@sha256:")
    digest = line.rsplit("@", 1)[1]
    assert DIGEST.fullmatch(digest)
    assert re.search(r"layer [0-9a-f]{12}: pushed", first.stderr)

    second = ok(deploy(lab, "push"))
    assert second.stdout.strip() == line
    assert "already pushed" in second.stderr
    assert "layer" not in second.stderr, "nothing is sent again"

    inventory = config.load(lab.inventory_path)
    tag = reference.rsplit(":", 1)[1]
    password = SecretStr(lab.registry_password)
    assert registry.digest(inventory, tag, password=password) == digest


def test_push_refuses_to_replace_a_tag_with_another_image(clean_lab: Lab) -> None:
    lab = clean_lab
    v1 = built(deploy(lab, "build"))
    ok(deploy(lab, "push"))
    lab.commit_app("v2")
    v2 = built(deploy(lab, "build"))
    repository, tag = v1.rsplit(":", 1)
    lab.client.images.get(v2).tag(repository, tag)  # the local v1 tag now names the v2 image

    result = deploy(lab, "push", "--tag", tag)
    assert result.code == 4, result.output
    assert f"{v1} already exists in the registry as sha256:" in result.stderr
    assert "tags are immutable: build a new commit" in result.stderr


def test_push_of_a_tag_never_built_here(clean_lab: Lab) -> None:
    result = deploy(clean_lab, "push", "--tag", "0123456789ab")
    assert result.code == 2, result.output
    assert "run `deploy build` first" in result.stderr


def test_wrong_password_is_refused_and_never_shown(clean_lab: Lab) -> None:
    lab = clean_lab
    ok(deploy(lab, "build"))
    wrong = "Wr0ng-" + lab.registry_password[:6]
    result = deploy(lab, "push", env={"DEPLOY_REGISTRY_PASSWORD": wrong})
    assert result.code == 4, result.output
    assert "unauthorized" in result.stderr
    assert "app.registry.username (deploy)" in result.stderr and "$DEPLOY_REGISTRY_PASSWORD" in result.stderr
    assert wrong not in result.output and lab.registry_password not in result.output
    verbose = deploy(lab, "-v", "push", env={"DEPLOY_REGISTRY_PASSWORD": wrong})
    assert verbose.code == 4 and wrong not in verbose.output


def test_registry_down_is_a_registry_error_with_its_address(clean_lab: Lab) -> None:
    lab = clean_lab
    ok(deploy(lab, "build"))
    inventory = config.load(lab.inventory_path)
    lab.stop_registry()
    try:
        result = deploy(lab, "push")
        with pytest.raises(RegistryError) as caught:
            registry.digest(inventory, "0123456789ab", password=SecretStr(lab.registry_password))
    finally:
        lab.start_registry()
    assert caught.value.exit_code == 4, "unreachable is not 'tag not found'"
    assert caught.value.message.startswith(
        f"cannot read {lab.registry}/acme/web:0123456789ab from the registry: "
    )
    assert result.code == 4, result.output
    assert re.search(
        rf'error: cannot push \S+: Get "https://{re.escape(lab.registry)}/v2/": dial tcp ', result.stderr
    )
    assert f"hint: is the registry at {lab.registry} running and reachable?" in result.stderr


def test_registry_digest_of_a_missing_tag(clean_lab: Lab) -> None:
    inventory = config.load(clean_lab.inventory_path)
    with pytest.raises(TagNotFound) as caught:
        registry.digest(inventory, "0123456789ab", password=SecretStr(clean_lab.registry_password))
    assert caught.value.exit_code == 2
    assert caught.value.message == f"{clean_lab.registry}/acme/web:0123456789ab is not in the registry"


def test_cache_from_pulls_the_pushed_image_and_warns_about_missing_ones(clean_lab: Lab) -> None:
    lab = clean_lab
    reference = built(deploy(lab, "build"))
    original = image_id(lab, reference)
    ok(deploy(lab, "push"))
    lab.client.images.remove(reference)  # as on a fresh CI runner

    missing = f"{lab.registry}/acme/web:no-such-tag"
    result = deploy(lab, "build", "--cache-from", reference, "--cache-from", missing)
    assert built(result) == reference
    assert f"warning: cannot pull {missing}" in result.stderr
    assert image_id(lab, reference) == original
