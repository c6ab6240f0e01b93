"""The engine's build, push and pull streams, and registry errors, parsed without an engine.

The streams in data/engine_streams.json were recorded from a real dockerd and registry
(see its ``_about``); a few cases the lab cannot produce on demand are made up and say so.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from deployer import config
from deployer.config import registry_server
from deployer.errors import BuildError, RegistryError
from deployer.images import (
    _build_events,
    _build_image_id,
    _labels,
    _no_secret,
    _push_digest,
    _Registry,
    _registry_events,
    _registry_failure,
    _split_reference,
)
from deployer.output import Output
from deployer.source import Revision

RECORDED = json.loads((Path(__file__).parent / "data" / "engine_streams.json").read_text())
STREAMS: dict[str, list[dict[str, Any]]] = RECORDED["streams"]
REGISTRY = _Registry("192.0.2.2:5443", "tester", "DEPLOY_REGISTRY_PASSWORD")
REFERENCE = "192.0.2.2:5443/acme/web:t1"
PUSHED = "sha256:f4f6d41b8391cb8e0ac17919857839fb6988b0c384679b369cf22ab7a7c76348"


def output(verbosity: int = 0) -> tuple[Output, io.StringIO]:
    stderr = io.StringIO()
    return Output(verbosity=verbosity, stdout=io.StringIO(), stderr=stderr), stderr


# ---------------------------------------------------------------- build


def test_build_shows_steps_and_returns_the_full_image_id() -> None:
    out, stderr = output()
    image_id = _build_image_id(STREAMS["build_ok"], out)
    assert image_id == "sha256:cea347f8ea03da883982e0a0f426726b8d9bd7a29d8767a11171362f97750228"
    lines = stderr.getvalue().splitlines()
    assert lines[:3] == [
        "Step 1/7 : FROM scratch",
        "Step 2/7 : COPY busybox /bin/busybox",
        "Step 3/7 : COPY www /www",
    ]
    assert len(lines) == 7, "engine chatter and RUN output are detail, hidden at normal verbosity"


def test_build_detail_shows_run_output_and_cache_use_when_verbose() -> None:
    out, stderr = output(verbosity=1)
    _build_image_id(STREAMS["build_ok2"], out)
    assert " ---> Using cache" in stderr.getvalue().splitlines()


def test_build_lines_are_whole_however_the_engine_chunks_them() -> None:
    text_items = [item for item in STREAMS["build_ok"] if "stream" in item]
    text = "".join(item["stream"] for item in text_items)
    chunked = [{"stream": text[i : i + 5]} for i in range(0, len(text), 5)]
    assert list(_build_events(chunked)) == list(_build_events(text_items))


def test_failed_run_names_the_step_and_shows_its_output() -> None:
    out, _ = output()
    with pytest.raises(BuildError) as caught:
        _build_image_id(STREAMS["build_fail"], out)
    assert caught.value.exit_code == 3
    first, *rest = caught.value.message.splitlines()
    assert first == (
        'step 3/6 RUN ["/bin/busybox", "sh", "-c", "echo about to fail; echo oops >&2; exit 2"]: '
        "the command '/bin/busybox sh -c echo about to fail; echo oops >&2; exit 2' returned a non-zero code: 2"
    )
    assert rest == ["  last output of the step:", "    about to fail", "    oops"], (
        "no colour codes, no engine lines"
    )


def test_failed_copy_names_the_step() -> None:
    out, _ = output()
    with pytest.raises(BuildError) as caught:
        _build_image_id(STREAMS["build_copyfail"], out)
    assert caught.value.message == (
        "step 2/2 COPY missing.txt /missing.txt: COPY failed: file not found in build context or excluded "
        "by .dockerignore: stat missing.txt: file does not exist"
    )


def test_error_before_any_step() -> None:  # made up: the engine refusing the context up front
    with pytest.raises(BuildError, match=r"^the build failed: error checking context: 'no permission'$"):
        list(_build_events([{"error": "error checking context: 'no permission'", "errorDetail": {}}]))


def test_build_without_an_image_is_an_error() -> None:
    out, _ = output()
    truncated = [item for item in STREAMS["build_ok"] if "aux" not in item][:10]
    with pytest.raises(BuildError, match="without reporting an image"):
        _build_image_id(truncated, out)


def test_engines_without_aux_report_the_short_id() -> None:  # made up: API < 1.30
    out, _ = output()
    legacy = [{"stream": "Step 1/1 : FROM scratch\n"}, {"stream": "Successfully built 0123456789ab\n"}]
    assert _build_image_id(legacy, out) == "0123456789ab"


def test_labels_come_from_the_commit_only(tmp_path: Path) -> None:
    inventory = config.parse(
        "app: {name: web, image: r.example.com/acme/web}\nhosts: {web: [w1]}\n", tmp_path / "inventory.yaml"
    )
    revision = Revision("a" * 40, "a" * 12, (), "2024-05-06T07:08:09+02:00", None)
    assert _labels(inventory, revision) == {
        "org.opencontainers.image.revision": "a" * 40,
        "org.opencontainers.image.created": "2024-05-06T07:08:09+02:00",
        "org.opencontainers.image.version": "a" * 12,
        "org.opencontainers.image.title": "web",
    }
    with_source = Revision("a" * 40, "a" * 12, (), "2024-05-06T07:08:09+02:00", "https://git.example.com/web")
    assert _labels(inventory, with_source)["org.opencontainers.image.source"] == "https://git.example.com/web"


# ---------------------------------------------------------------- push


def test_push_shows_each_layer_and_returns_the_aux_digest() -> None:
    out, stderr = output()
    assert _push_digest(STREAMS["push_ok"], REFERENCE, REGISTRY, out) == PUSHED
    assert stderr.getvalue().splitlines() == [
        "layer 13ff630b2381: pushed",
        "layer 3f640debe6e6: pushed",
        "layer fdca386dc4db: pushed",
    ]


def test_layers_already_in_the_registry_show_as_skipped() -> None:
    out, stderr = output()
    assert _push_digest(STREAMS["push_again"], REFERENCE, REGISTRY, out) == PUSHED
    assert stderr.getvalue().splitlines() == [
        "layer fdca386dc4db: already in the registry, skipped",
        "layer 3f640debe6e6: already in the registry, skipped",
        "layer 13ff630b2381: already in the registry, skipped",
    ]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None, int | None, str, str]] = []

    def update(self, item, phase, done=None, total=None, *, unit="layers", note=""):  # type: ignore[no-untyped-def]
        self.events.append((item, phase, done, total, unit, note))


def test_a_push_tells_its_watch_the_bytes_each_layer_sent() -> None:
    out, stderr = output()
    out.watch = recorder = Recorder()
    assert _push_digest(STREAMS["push_ok"], REFERENCE, REGISTRY, out) == PUSHED
    assert [e for e in recorder.events if e[0] == "fdca386dc4db"] == [
        ("fdca386dc4db", "push", None, None, "bytes", ""),
        *[("fdca386dc4db", "push", current, 1982256, "bytes", "")
          for current in [item["progressDetail"]["current"] for item in STREAMS["push_ok"]
                          if item.get("id") == "fdca386dc4db" and item["status"] == "Pushing"]],
        ("fdca386dc4db", "pushed", None, None, "layers", ""),
    ]  # fmt: skip
    assert ("13ff630b2381", "push", 1536, None, "bytes", "") in recorder.events, "a size the engine did not give"
    assert stderr.getvalue() == "", "the watch, not the plain lines, shows the layers"
    out.watch = recorder = Recorder()
    _push_digest(STREAMS["push_again"], REFERENCE, REGISTRY, out)
    assert [e for e in recorder.events if e[1] != "push"] == [
        (layer, "skipped", None, None, "layers", "already in the registry")
        for layer in ("fdca386dc4db", "3f640debe6e6", "13ff630b2381")
    ]


def test_a_build_tells_its_watch_each_step() -> None:
    out, stderr = output()
    out.watch = recorder = Recorder()
    _build_image_id(STREAMS["build_ok"], out)
    assert recorder.events[:2] == [
        ("build", "step", 1, 7, "steps", "FROM scratch"),
        ("build", "step", 2, 7, "steps", "COPY busybox /bin/busybox"),
    ]
    assert len(recorder.events) == 7 and stderr.getvalue() == ""


def test_verbose_push_shows_each_layer_state_once() -> None:
    out, stderr = output(verbosity=1)
    _push_digest(STREAMS["push_ok"], REFERENCE, REGISTRY, out)
    lines = stderr.getvalue().splitlines()
    assert lines.count("layer fdca386dc4db: pushing") == 1
    assert "The push refers to repository [192.0.2.2:5443/acme/web]" in lines


def test_digest_from_the_status_line_when_there_is_no_aux_item() -> None:
    out, _ = output()
    without_aux = [item for item in STREAMS["push_ok"] if "aux" not in item]
    assert _push_digest(without_aux, REFERENCE, REGISTRY, out) == PUSHED


def test_no_digest_is_an_error() -> None:
    out, _ = output()
    without_digest = [item for item in STREAMS["push_ok"] if "aux" not in item and "digest" not in str(item)]
    with pytest.raises(RegistryError, match=r"^pushing 192.0.2.2:5443/acme/web:t1 ended without a digest"):
        _push_digest(without_digest, REFERENCE, REGISTRY, out)


AUTH_HINT = "check app.registry.username (tester) and the password in $DEPLOY_REGISTRY_PASSWORD"
TLS_HINT = "the engine does not trust the registry's certificate: put its CA in /etc/docker/certs.d/192.0.2.2:5443/ca.crt"
NETWORK_HINT = (
    "is the registry at 192.0.2.2:5443 running and reachable? check app.registry.server and app.image"
)


@pytest.mark.parametrize(
    ("stream", "reason", "hint"),
    [
        ("push_unauth", "unauthorized: authentication required", AUTH_HINT),
        ("push_noauth", "no basic auth credentials", AUTH_HINT),
        (
            "push_x509",
            'Get "https://192.0.2.2:5443/v2/": x509: certificate signed by unknown authority',
            TLS_HINT,
        ),
        (
            "push_refused",
            'Get "https://192.0.2.2:5999/v2/": dial tcp 192.0.2.2:5999: connect: connection refused',
            NETWORK_HINT,
        ),
        (
            "push_nohost",
            'Get "https://nosuchhost.invalid:5000/v2/": dial tcp: lookup nosuchhost.invalid on '
            "10.255.255.53:53: no such host",
            NETWORK_HINT,
        ),
        ("push_nolocal", "tag does not exist: 192.0.2.2:5443/acme/web:nolocal", None),
    ],
)
def test_push_error_items_fail_with_the_registry_message_and_a_hint(
    stream: str, reason: str, hint: str | None
) -> None:
    out, _ = output()
    with pytest.raises(RegistryError) as caught:
        _push_digest(STREAMS[stream], REFERENCE, REGISTRY, out)
    assert caught.value.exit_code == 4
    assert caught.value.message == f"cannot push {REFERENCE}: {reason}"
    assert caught.value.hint == hint


def test_io_timeout_points_at_the_registry_address() -> None:  # made up: a firewalled registry
    item = {"error": 'Get "https://10.9.9.9:5000/v2/": dial tcp 10.9.9.9:5000: i/o timeout'}
    with pytest.raises(RegistryError) as caught:
        list(_registry_events([item], "cannot push x", REGISTRY))
    assert caught.value.hint == NETWORK_HINT


def test_auth_hint_without_a_configured_user_suggests_docker_login() -> None:
    error = _registry_failure("cannot push x", "no basic auth credentials", _Registry("registry.example.com"))
    assert error.hint == (
        "run `docker login registry.example.com`, or set app.registry.username and app.registry.password_env"
    )


@pytest.mark.parametrize(
    ("recorded", "hint"),
    [("unauth", AUTH_HINT), ("x509", TLS_HINT), ("refused", NETWORK_HINT), ("nohost", NETWORK_HINT)],
)
def test_registry_lookup_errors_get_the_same_hints(recorded: str, hint: str) -> None:
    reason = RECORDED["registry_errors"][recorded]
    error = _registry_failure("cannot read x from the registry", reason, REGISTRY)
    assert error.message == f"cannot read x from the registry: {reason}"
    assert error.hint == hint


def test_pull_stream_reports_its_digest() -> None:
    events = list(_registry_events(STREAMS["pull_ok"], "cannot pull x", REGISTRY))
    assert ("digest", "sha256:66d364790c8325904d1a3f085e1d40dae07d7f3479071780f9d34ec9b914abd1") in events


# ---------------------------------------------------------------- helpers


def test_no_error_leaves_with_the_password() -> None:
    password = SecretStr("pa55-w0rd")
    with pytest.raises(RegistryError) as caught, _no_secret(password):
        raise RegistryError("registry said: bad pa55-w0rd", hint="pa55-w0rd is wrong")
    assert (caught.value.message, caught.value.hint) == ("registry said: bad ***", "*** is wrong")
    assert "pa55-w0rd" not in str(caught.value)


@pytest.mark.parametrize(
    ("reference", "server"),
    [
        ("172.30.57.2:5000/acme/web", "172.30.57.2:5000"),
        ("registry.example.com/acme/web:1", "registry.example.com"),
        ("localhost/web", "localhost"),
        ("acme/web", "docker.io"),
        ("python:3.12", "docker.io"),
    ],
)
def test_server_of(reference: str, server: str) -> None:
    assert registry_server(reference) == server


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("172.30.57.2:5000/acme/web:abc", ("172.30.57.2:5000/acme/web", "abc")),
        ("172.30.57.2:5000/acme/web", ("172.30.57.2:5000/acme/web", "latest")),
        ("acme/web@sha256:" + "0" * 64, ("acme/web", "sha256:" + "0" * 64)),
        ("python", ("python", "latest")),
    ],
)
def test_split_reference(reference: str, parts: tuple[str, str]) -> None:
    assert _split_reference(reference) == parts
