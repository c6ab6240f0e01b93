"""The benchmark's sample image: the lab's app with a 40 MiB base layer, built and pushed by `deploy`.

Layers, bottom to top: a 40 MiB file (another size for the registry-less measure, `--base-mib`) of fixed pseudo-random bytes in its own COPY (the same
in every release), busybox, then `www/` (the app: its pages plus a bundle of pseudo-random
bytes seeded by the version), so a new release changes the top layer and only that one.
Random bytes do not compress, so the layers travel at about their size.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.support import deploy, ok
from tests.lab import Lab

from . import probes

BASE_FILE = "bench-base.bin"
BASE_BYTES = 40 * 2**20
BUNDLE_FILE = "www/bundle.bin"
DEFAULT_BUNDLE_BYTES = 2**20


def fixed_bytes(seed: bytes, size: int) -> bytes:
    """`size` pseudo-random bytes, always the same for the same seed."""
    return hashlib.shake_256(b"deploy-bench:" + seed).digest(size)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def commit_release(lab: Lab, version: str, bundle_bytes: int = DEFAULT_BUNDLE_BYTES,
                   base_bytes: int = BASE_BYTES) -> str:
    """Commit `version` of the app with the base layer and bundle; return the commit sha."""
    lab.commit_app(version)
    repo = lab.app_repo
    base = repo / BASE_FILE
    if not base.is_file() or base.stat().st_size != base_bytes:
        base.write_bytes(fixed_bytes(b"base", base_bytes))
    (repo / BUNDLE_FILE).write_bytes(fixed_bytes(version.encode(), bundle_bytes))
    dockerfile = repo / "Dockerfile"
    text = dockerfile.read_text()
    if "FROM scratch\n" not in text:
        raise RuntimeError(f"unexpected sample Dockerfile:\n{text}")
    dockerfile.write_text(text.replace("FROM scratch\n", f"FROM scratch\nCOPY {BASE_FILE} /{BASE_FILE}\n", 1))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--amend", "--no-edit")
    return _git(repo, "rev-parse", "HEAD")


@dataclass(frozen=True)
class Layer:
    """One layer of an image as the registry stores it (compressed)."""

    digest: str
    size: int


@dataclass(frozen=True)
class Image:
    """A release in the registry: its tag, the version it serves, its layers and config size."""

    tag: str
    version: str
    layers: tuple[Layer, ...]
    config_bytes: int

    @property
    def total_bytes(self) -> int:
        """Layers plus config: what a pull onto an empty host fetches, manifest aside."""
        return sum(layer.size for layer in self.layers) + self.config_bytes

    def new_layers(self, previous: Image) -> tuple[Layer, ...]:
        """The layers this image has and `previous` does not."""
        known = {layer.digest for layer in previous.layers}
        return tuple(layer for layer in self.layers if layer.digest not in known)


@dataclass(frozen=True)
class Push:
    """One `deploy push`: seconds, bytes the registry stored and received, layers sent or skipped."""

    tag: str
    seconds: float
    stored_bytes: int
    received_bytes: int
    layers_pushed: int
    layers_skipped: int


def image(lab: Lab, tag: str, version: str) -> Image:
    """The registry's view of the app image at `tag`."""
    data = probes.manifest(lab, tag)
    layers = tuple(Layer(str(item["digest"]), int(item["size"])) for item in data["layers"])
    return Image(tag, version, layers, int(data["config"]["size"]))


def build_and_push(lab: Lab, inventory: Path) -> tuple[str, Push]:
    """`deploy build`, then `deploy -v push` with the registry's counters read around it."""
    built = ok(deploy(lab, "-i", str(inventory), "build")).stdout.strip().splitlines()[-1]
    tag = built.rsplit(":", 1)[1]
    before = probes.registry_counters()
    started = time.perf_counter()
    pushed = ok(deploy(lab, "-v", "-i", str(inventory), "push"))
    seconds = time.perf_counter() - started
    after = probes.registry_counters()
    return tag, Push(
        tag=tag,
        seconds=seconds,
        stored_bytes=after.stored_bytes - before.stored_bytes,
        received_bytes=after.received_bytes - before.received_bytes,
        layers_pushed=len(re.findall(r"^layer \S+: pushed$", pushed.stderr, flags=re.M)),
        layers_skipped=len(re.findall(r"^layer \S+: already in the registry", pushed.stderr, flags=re.M)),
    )
