"""The lab host image: debootstrapped Debian plus a small top layer (`hostimage/`).

Both images are tagged with a short hash of their recipe and built only when that
tag is missing, so they are cached across runs until the recipe changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors

BASE_REPO = "deploy-lab-host-base"
HOST_REPO = "deploy-lab-host"
SUITE = "bookworm"
PACKAGES = (
    "docker.io", "openssh-server", "iproute2", "ca-certificates", "curl",
    "python3", "docker-registry", "procps", "busybox-static",
    # Ansible's community.docker modules talk to the engine's API with requests (bench/).
    "python3-requests",
)
DEBOOTSTRAP_ARGS = ("--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE)
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CONTEXT_DIR = Path(__file__).with_name("hostimage")


def _short_hash(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def base_tag() -> str:
    """Tag of the debootstrapped image, from the debootstrap arguments."""
    return f"{BASE_REPO}:{_short_hash(*(a.encode() for a in DEBOOTSTRAP_ARGS))}"


def host_tag() -> str:
    """Tag of the host image, from the base tag and the files in hostimage/."""
    files = sorted(CONTEXT_DIR.iterdir())
    parts = [f.name.encode() + f.read_bytes() for f in files]
    return f"{HOST_REPO}:{_short_hash(base_tag().encode(), *parts)}"


def debian_mirror(sources: Path = SOURCES) -> str:
    """The first Debian (non-security) mirror named in the deb822 sources file."""
    uri: str
    for uri in re.findall(r"^URIs:\s*(\S+)", sources.read_text(), flags=re.M):
        if "security" not in uri:
            return uri
    raise RuntimeError(f"no Debian mirror found in {sources}")


def _exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _build_base(tag: str, log_file: Path) -> None:
    """debootstrap a Debian root file system and `docker import` it as `tag`."""
    rootfs = Path(tempfile.mkdtemp(prefix="deploy-lab-rootfs-", dir="/var/tmp"))
    try:
        with log_file.open("ab") as log:
            subprocess.run(
                ["debootstrap", *DEBOOTSTRAP_ARGS, str(rootfs), debian_mirror()],
                stdout=log, stderr=subprocess.STDOUT, check=True,
            )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout,
                           stdout=subprocess.DEVNULL, check=True)
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError(f"tar of {rootfs} failed")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _build_host(client: docker.DockerClient, tag: str, base: str) -> None:
    try:
        client.images.build(path=str(CONTEXT_DIR), tag=tag, buildargs={"BASE": base},
                            rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        log = "".join(str(item.get("stream", item.get("error", ""))) for item in exc.build_log)
        raise RuntimeError(f"building {tag} failed:\n{log}") from exc


def _remove_other_tags(client: docker.DockerClient, repo: str, keep: str) -> None:
    """Drop images of `repo` built from an older recipe."""
    for image in client.images.list(name=repo):
        for tag in image.tags:
            if tag != keep:
                # An image still used by a container stays; a later run removes it.
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)


def ensure_host_image(client: docker.DockerClient, log_file: Path) -> str:
    """Return the tag of the lab host image, building whatever is missing."""
    base, host = base_tag(), host_tag()
    if _exists(client, host):
        return host
    if not _exists(client, base):
        _build_base(base, log_file)
    _build_host(client, host, base)
    _remove_other_tags(client, HOST_REPO, host)
    _remove_other_tags(client, BASE_REPO, base)
    return host
