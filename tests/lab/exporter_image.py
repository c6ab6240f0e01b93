"""An exporter-like accessory image for the lab: busybox httpd serving a metrics text, alone in a
`FROM scratch` image, pushed to the lab registry (the lab hosts cannot pull public images).

    reference = ensure_exporter_image(lab)   # "172.30.57.2:5000/deploy/exporter:1"

At each start it counts its boots in /data/boots (a volume keeps the count), writes
/www/metrics with the value of $LABEL and that count, logs one line, and serves on the port its
first argument names (9100 by default).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors

from .app import BUSYBOX

if TYPE_CHECKING:
    from .lab import Lab

REPOSITORY = "deploy/exporter"  # in the lab registry
TAG = "1"
BB = "/bin/busybox"

_SCRIPT = (
    f"{BB} mkdir -p /data /www; "
    f'n=$(( $({BB} cat /data/boots 2>/dev/null || echo 0) + 1 )); echo "$n" > /data/boots; '
    "printf 'exporter_info{label=\"%s\"} 1\\nexporter_boots %s\\n' \"$LABEL\" \"$n\" > /www/metrics; "
    'echo "exporter up: boot $n, label $LABEL"; '
    f'exec {BB} httpd -f -v -p "${{1:-9100}}" -h /www'
)
_DOCKERFILE = f"""\
FROM scratch
COPY busybox {BB}
ENTRYPOINT {json.dumps([BB, "sh", "-c", _SCRIPT, "exporter"])}
"""


def ensure_exporter_image(lab: Lab) -> str:
    """Build the exporter image and push it to the lab registry; return its reference."""
    reference = f"{lab.registry}/{REPOSITORY}:{TAG}"
    with tempfile.TemporaryDirectory(prefix="deploy-lab-exporter-") as context:
        shutil.copy2(BUSYBOX, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text(_DOCKERFILE)
        try:
            lab.client.images.build(path=context, tag=reference, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            log = "".join(str(item.get("stream", item.get("error", ""))) for item in exc.build_log)
            raise RuntimeError(f"building {reference} failed:\n{log}") from exc
    auth = {"username": lab.registry_user, "password": lab.registry_password}
    repository, tag = reference.rsplit(":", 1)
    errors = [str(item["error"]) for item in
              lab.client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
              if "error" in item]
    if errors:
        raise RuntimeError(f"pushing {reference} failed: {errors[-1]}")
    return reference
