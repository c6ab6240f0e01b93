"""The registry-less benchmark (bench/noregistry.py): its loops, its inventory, and its report."""

from __future__ import annotations

from bench import noregistry
from bench.sample import Image, Layer
from deployer import config
from tests.lab import LabHost
from tests.lab.inventory import default_inventory, merge, render

HOSTS = [LabHost("host1", "172.30.57.11", "deploy-lab-host1"), LabHost("host2", "172.30.57.12", "deploy-lab-host2")]


class _Lab:
    known_hosts = "/lab/known_hosts"
    ssh_key = "/lab/key"


def test_each_host_gets_the_whole_image_from_docker_save_then_runs_it() -> None:
    script = noregistry.loop_script(_Lab(), HOSTS, "t2", parallel=True)  # type: ignore[arg-type]
    assert "for host in 172.30.57.11 172.30.57.12; do" in script
    assert 'docker save acme/web:t2 | ssh -F none ' in script and '"$host" "$remote" &' in script
    assert "set -u -o pipefail" in script
    assert noregistry.remote_script("t2").startswith("docker load -q >/dev/null && ")
    assert "docker run -d --name web --init --restart unless-stopped -p 8080:8080 -v web-data:/data acme/web:t2" in (
        noregistry.remote_script("t2"))
    sequential = noregistry.loop_script(_Lab(), HOSTS, "t2", parallel=False)  # type: ignore[arg-type]
    assert '"$host" "$remote" || exit 1' in sequential and "&\n" not in sequential


def test_the_deploy_contender_has_no_registry() -> None:
    base = default_inventory(registry="172.30.57.2:5000", username="deploy", context="/app", identity_file="/k",
                             known_hosts="/kh", groups={"lab": ["172.30.57.11"]})
    inventory = config.parse(render(merge(base, {"app": noregistry.inventory_overrides()})))
    assert inventory.app.no_registry and inventory.app.image == "acme/web"


def _image(tag: str, top: str) -> Image:
    return Image(tag, tag, (Layer("sha256:base", 40 << 20), Layer(top, 1 << 20)), 1000)


def test_the_report_gives_medians_and_the_goals() -> None:
    results = noregistry.NoRegistryResults((1,), 1, [_image("a", "sha256:a"), _image("b", "sha256:b")])
    for contender, cold, warm in (("deploy", 1.0, 0.4), ("saveload-seq", 2.0, 2.0), ("saveload-par", 1.5, 2.5)):
        results.samples += [noregistry.Run(contender, "cold", 1, 0, cold, [42 << 20]),
                            noregistry.Run(contender, "warm", 1, 0, warm, [1 << 20])]
    text = noregistry.render(results)
    assert "| 1 | cold | deploy rollout (registry: false) | 1.00 | 42.00 |" in text
    assert "| 1 | warm | docker save \\| ssh docker load, parallel | 2.50 | 1.00 |" in text
    assert "| cold: faster than the parallel loop | 1 | 1.00 s vs 1.50 s | yes |" in text
    assert "| warm: 5x faster than the parallel loop | 1 | 6.2x | yes |" in text
