"""Build and push one image per commit with the Docker SDK.

The engine reports most failures as ``error`` items inside its progress streams rather than
by raising; the stream parsers below turn them, like ``docker.errors.*`` and connection errors,
into BuildError or RegistryError with a hint. No message ever carries the registry password.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from deployer.config import registry_server
from deployer.errors import BuildError, ConfigError, DeployError, RegistryError, UsageError

if TYPE_CHECKING:
    import docker
    from pydantic import SecretStr

    from deployer.config import Inventory
    from deployer.output import Output
    from deployer.progress import Phase, Progress
    from deployer.source import Revision

LABEL = "org.opencontainers.image."
STEP_OUTPUT_LINES = 10

Kind = Literal["step", "layer", "detail", "image", "digest"]
Event = tuple[Kind, str]
"""What a stream parser reports: ``step``/``layer`` lines are progress, ``detail`` is engine
chatter, ``image``/``digest`` carry the result."""

_STEP = re.compile(r"^Step (\d+/\d+) : (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DIGEST = re.compile(r"\bdigest: (sha256:[0-9a-f]{64})\b", re.I)
_AUTH_WORDS = ("unauthorized", "authentication required", "no basic auth credentials", "denied")
_TLS_WORDS = ("x509", "certificate")
_PLAIN_HTTP = "server gave http response to https client"
_NETWORK_WORDS = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "no route to host",
    "network is unreachable",
    "timeout exceeded",
)
_LAYER_DONE = {
    "pushed": "pushed",
    "layer already exists": "already in the registry, skipped",
    "pull complete": "pulled",
    "already exists": "already here, skipped",
}


@dataclass(frozen=True)
class BuiltImage:
    """An image built and tagged on the local engine."""

    reference: str
    image_id: str


@dataclass(frozen=True)
class PushedImage:
    """An image in the registry: its tagged reference and the digest that pins it."""

    reference: str
    digest: str


@dataclass(frozen=True)
class _Registry:
    """Where an image is pushed, as far as messages need it (never the password)."""

    server: str
    username: str | None = None
    password_env: str | None = None


# ---------------------------------------------------------------- build


def build(
    inventory: Inventory,
    revision: Revision,
    *,
    cache_from: list[str],
    password: SecretStr | None,
    out: Output,
    client: docker.DockerClient | None = None,
) -> BuiltImage:
    """Build the image of *revision*, tagged ``<app.image>:<revision.tag>``, streaming progress."""
    settings = inventory.app.build
    context = inventory.base_dir / settings.context
    dockerfile = inventory.dockerfile
    if not context.is_dir():
        raise ConfigError(f"{context}: the build context is not a directory", hint="check app.build.context")
    if not dockerfile.is_file():
        raise ConfigError(f"{dockerfile}: no Dockerfile here", hint="check app.build.dockerfile")
    reference = f"{inventory.app.image}:{revision.tag}"
    with _no_secret(password):
        engine = client or _engine()
        for ref in cache_from:
            _pull_for_cache(engine, ref, inventory, password, out)
        out.progress(f"building {reference}")
        try:
            stream = engine.api.build(
                path=str(context),
                dockerfile=settings.dockerfile,
                tag=reference,
                buildargs=dict(settings.args) or None,
                labels=_labels(inventory, revision),
                cache_from=list(cache_from) or None,
                decode=True,
                rm=True,
                forcerm=True,
            )
            image_id = _build_image_id(stream, out)
        except _engine_errors() as exc:
            raise BuildError(f"building {reference} failed: {_reason(exc)}") from exc
        except OSError as exc:
            raise BuildError(f"cannot read the build context {context}: {exc}") from exc
    out.progress(f"built {reference} ({image_id.removeprefix('sha256:')[:12]})")
    return BuiltImage(reference, image_id)


def _labels(inventory: Inventory, revision: Revision) -> dict[str, str]:
    """OCI labels; all come from the commit, so rebuilding it gives the same image from cache."""
    labels = {
        LABEL + "revision": revision.sha,
        LABEL + "created": revision.committed_at,
        LABEL + "version": revision.tag,
        LABEL + "title": inventory.app.name,
    }
    if revision.source:
        labels[LABEL + "source"] = revision.source
    return labels


def _pull_for_cache(
    engine: Any, ref: str, inventory: Inventory, password: SecretStr | None, out: Output
) -> None:
    """Pull *ref* so its layers can be reused; failing to is a warning, not an error."""
    registry = _registry(inventory)
    auth = _auth(inventory, password) if registry_server(ref) == registry.server else None
    repository, tag = _split_reference(ref)
    out.progress(f"pulling {ref} to reuse its layers")
    try:
        stream = engine.api.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth)
        for _, text in _registry_events(stream, f"cannot pull {ref}", registry):
            out.detail(text)
    except RegistryError as exc:
        out.warn(_scrub(f"{exc.message}; building without its layers unless a local copy exists", password))
    except _engine_errors() as exc:
        out.warn(_scrub(f"cannot pull {ref}: {_reason(exc)}; building without its layers", password))


def _build_image_id(stream: Iterable[Mapping[str, Any]], out: Output) -> str:
    """Show a build stream as it comes; return the built image id; BuildError if the build failed."""
    image_id = _follow(_build_events(stream), "image", out)
    if image_id is None:
        raise BuildError(
            "the engine ended the build without reporting an image", hint="run again with --verbose"
        )
    return image_id


def _build_events(stream: Iterable[Mapping[str, Any]]) -> Iterator[Event]:
    """Events of a build stream (``client.api.build(decode=True)``); BuildError on an error item.

    Output arrives in arbitrary chunks, so text is split into lines here. The failed step and
    the last lines it printed go into the error.
    """
    pending = ""
    step: str | None = None
    image_id: str | None = None
    output: deque[str] = deque(maxlen=STEP_OUTPUT_LINES)
    for item in stream:
        if "error" in item or "errorDetail" in item:
            if _ANSI.sub("", pending).strip():
                output.append(_ANSI.sub("", pending).rstrip())
            raise BuildError(_step_failure(step, _error_text(item), list(output)))
        if isinstance(item.get("aux"), Mapping) and "ID" in item["aux"]:
            image_id = str(item["aux"]["ID"])
            yield ("image", image_id)
        if "status" in item:
            yield (
                "detail",
                " ".join(str(item[key]) for key in ("id", "status", "progress") if item.get(key)),
            )
        pending += str(item.get("stream", ""))
        *lines, pending = pending.split("\n")
        for raw in lines:
            line = _ANSI.sub("", raw).rstrip()
            match = _STEP.match(line)
            if match:
                step = line
                output.clear()
                yield ("step", line)
            elif line.startswith("Successfully built ") and image_id is None:  # engines without aux
                yield ("image", line.removeprefix("Successfully built ").strip())
            elif line:
                if not line.startswith((" ---> ", "Removing intermediate container")):
                    output.append(line)
                yield ("detail", line)
    if _ANSI.sub("", pending).strip():
        yield ("detail", _ANSI.sub("", pending).rstrip())


def _step_failure(step: str | None, error: str, output: list[str]) -> str:
    """``step 4/7 RUN make: the command ... returned a non-zero code: 2``, and the step's output."""
    match = _STEP.match(step or "")
    reason = error[0].lower() + error[1:] if error[:2].istitle() else error
    message = f"step {match.group(1)} {match.group(2)}: {reason}" if match else f"the build failed: {reason}"
    if output:
        message += "\n  last output of the step:\n    " + "\n    ".join(output)
    return message


# ---------------------------------------------------------------- push


def push(
    inventory: Inventory,
    tag: str,
    *,
    password: SecretStr | None,
    out: Output,
    client: docker.DockerClient | None = None,
) -> PushedImage:
    """Push ``<app.image>:<tag>``; return its digest. A tag already pushed is not sent again.

    Tags are immutable: a tag the registry holds for another image is refused, never overwritten.
    A tag with no local image is a UsageError (build it first).
    """
    reference = f"{inventory.app.image}:{tag}"
    registry = _registry(inventory)
    auth = _auth(inventory, password)
    with _no_secret(password):
        engine = client or _engine()
        local = _local_image(engine, reference)
        remote = _remote_digest(engine, reference, auth, f"cannot push {reference}", registry)
        if remote is not None:
            if any(entry.endswith("@" + remote) for entry in local.get("RepoDigests") or ()):
                out.progress(f"{reference} is already pushed, as {remote}")
                return PushedImage(reference, remote)
            raise RegistryError(
                f"{reference} already exists in the registry as {remote}, which is not this image; "
                "tags are immutable: build a new commit",
                hint="if another machine pushed this commit, deploy the image it pushed",
            )
        out.progress(f"pushing {reference}")
        try:
            stream = engine.api.push(inventory.app.image, tag=tag, stream=True, decode=True, auth_config=auth)
            digest = _push_digest(stream, reference, registry, out)
        except _engine_errors() as exc:
            raise RegistryError(f"cannot push {reference}: {_reason(exc)}") from exc
    return PushedImage(reference, digest)


def load_local(
    inventory: Inventory,
    tag: str,
    address: str,
    *,
    out: Output,
    client: docker.DockerClient | None = None,
) -> PushedImage:
    """Push ``<app.image>:<tag>`` into the registry on this machine's loopback at *address*
    (``app.registry: false``); only the layers it lacks are sent. Return the digest it holds.

    The engine pushes through a name carrying the registry's port; that name, and the digest
    reference the push leaves, are removed again, so the engine keeps only the usual tag.
    """
    from deployer import registry as registry_api

    reference = f"{inventory.app.image}:{tag}"
    repository = f"{address}/{inventory.app.image}"
    target = _Registry(address)
    engine = client or _engine()
    _local_image(engine, reference)
    before = registry_api.local_digest(address, inventory.app.image, tag)
    out.progress(f"putting {reference} into the local registry")
    digest: str | None = None
    try:
        engine.api.tag(reference, repository, tag=tag)
        stream = engine.api.push(repository, tag=tag, stream=True, decode=True)
        digest = _push_digest(stream, f"{repository}:{tag}", target, out)
    except _engine_errors() as exc:
        raise RegistryError(
            f"cannot push {reference} into the local registry at {address}: {_reason(exc)}",
            hint="the Docker engine must run on this machine to reach its loopback",
        ) from exc
    finally:
        import docker.errors

        # Removing the last tag of the port's repository usually takes the digest with it.
        for name in (f"{repository}:{tag}", *([f"{repository}@{digest}"] if digest else [])):
            try:
                engine.api.remove_image(name, noprune=True)
            except docker.errors.NotFound:
                continue
            except _engine_errors() as exc:
                out.warn(f"could not remove the temporary name {name} from the engine: {_reason(exc)}")
    if before is not None and before != digest:
        out.warn(f"{reference} was {before} in the local registry; it is now this build's {digest}")
    return PushedImage(reference, digest)


def _push_digest(
    stream: Iterable[Mapping[str, Any]], reference: str, registry: _Registry, out: Output
) -> str:
    """Show a push stream layer by layer; return the pushed digest; RegistryError on failure."""
    events = _registry_events(stream, f"cannot push {reference}", registry, watch=out.watch)
    digest = _follow(events, "digest", out)
    if digest is None:
        raise RegistryError(
            f"pushing {reference} ended without a digest from the registry", hint="run again with --verbose"
        )
    return digest


def _registry_events(
    stream: Iterable[Mapping[str, Any]], failure: str, registry: _Registry, *, watch: Progress | None = None
) -> Iterator[Event]:
    """Events of a push or pull stream; the first error item raises RegistryError(*failure*: reason).

    The engine does not raise on registry errors: they arrive as ``error``/``errorDetail`` items.
    A layer's finished state (pushed, already there) is a ``layer`` event; the digest comes from
    the ``aux`` item or from the ``<tag>: digest: sha256:… size: N`` status line. Given a *watch*,
    a push's layers go there instead, with the bytes each has sent (``progressDetail``).
    """
    last_status: dict[str, str] = {}
    for item in stream:
        if "error" in item or "errorDetail" in item:
            raise _registry_failure(failure, _error_text(item), registry)
        aux = item.get("aux")
        if isinstance(aux, Mapping) and aux.get("Digest"):
            yield ("digest", str(aux["Digest"]))
            continue
        status = str(item.get("status", ""))
        layer = str(item.get("id", ""))
        found = _DIGEST.search(status)
        if watch is not None and layer:
            _watch_push(watch, layer, status, item.get("progressDetail"))
        if found:
            yield ("digest", found.group(1))
        elif watch is not None and layer and _pushed_state(status) is not None:
            pass  # the watch has it
        elif layer and status.lower() in _LAYER_DONE:
            yield ("layer", f"layer {layer}: {_LAYER_DONE[status.lower()]}")
        elif layer and status.startswith("Mounted from "):
            yield ("layer", f"layer {layer}: {status.lower()}, skipped")
        elif layer and last_status.get(layer) != status:
            yield ("detail", f"layer {layer}: {status.lower()}")
        elif status and not layer:
            yield ("detail", status)
        last_status[layer] = status


def _pushed_state(status: str) -> tuple[Phase, str] | None:
    """The phase a push status ends a layer in, and why it was skipped; None while it goes on."""
    lowered = status.lower()
    if lowered == "pushed":
        return "pushed", ""
    if lowered == "layer already exists":
        return "skipped", "already in the registry"
    if status.startswith("Mounted from "):
        return "skipped", lowered
    return None


def _watch_push(watch: Progress, layer: str, status: str, detail: object) -> None:
    """Tell *watch* how far a layer's push is: bytes sent (of its size when the engine knows it)."""
    ended = _pushed_state(status)
    if ended is not None:
        watch.update(layer, ended[0], note=ended[1])
    elif status == "Pushing" and isinstance(detail, Mapping) and isinstance(detail.get("current"), int):
        total = detail.get("total")
        watch.update(
            layer, "push", detail["current"], total if isinstance(total, int) else None, unit="bytes"
        )
    elif status in ("Preparing", "Waiting"):
        watch.update(layer, "push", unit="bytes")


# ---------------------------------------------------------------- registry


def _remote_digest(
    engine: Any, reference: str, auth: dict[str, str] | None, failure: str, registry: _Registry
) -> str | None:
    """The registry's digest for *reference*, or None when the registry says it has no such tag."""
    import docker.errors

    try:
        data = engine.images.get_registry_data(reference, auth_config=auth)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise _registry_failure(failure, _reason(exc), registry) from exc
    except _engine_errors() as exc:
        raise RegistryError(f"{failure}: {_reason(exc)}") from exc
    return str(data.id)


def _registry_failure(failure: str, reason: str, registry: _Registry) -> RegistryError:
    """RegistryError for the registry's *reason*, with a hint fitting its cause."""
    text = reason.lower()
    server = registry.server
    hint: str | None = None
    if any(word in text for word in _AUTH_WORDS):
        if registry.username and registry.password_env:
            hint = f"check app.registry.username ({registry.username}) and the password in ${registry.password_env}"
        else:
            hint = f"run `docker login {server}`, or set app.registry.username and app.registry.password_env"
    elif _PLAIN_HTTP in text:
        hint = (
            f"{server} speaks plain HTTP: serve it over TLS, or list it in the engine's insecure-registries"
        )
    elif any(word in text for word in _TLS_WORDS):
        hint = f"the engine does not trust the registry's certificate: put its CA in /etc/docker/certs.d/{server}/ca.crt"
    elif any(word in text for word in _NETWORK_WORDS):
        hint = f"is the registry at {server} running and reachable? check app.registry.server and app.image"
    return RegistryError(f"{failure}: {reason}", hint=hint)


# ---------------------------------------------------------------- helpers


def _engine() -> Any:
    """A client for the local engine (DOCKER_HOST honoured); BuildError when it does not answer."""
    import docker
    import docker.errors

    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise BuildError(
            f"cannot reach the Docker engine: {exc}",
            hint="start Docker (dockerd), or point DOCKER_HOST at a running engine",
        ) from exc


def _engine_errors() -> tuple[type[Exception], ...]:
    """What the SDK raises when the engine refuses or the connection to it breaks."""
    import docker.errors
    import requests.exceptions

    return (docker.errors.DockerException, requests.exceptions.RequestException)


def _local_image(engine: Any, reference: str) -> dict[str, Any]:
    import docker.errors

    try:
        attrs: dict[str, Any] = engine.api.inspect_image(reference)
    except docker.errors.ImageNotFound as exc:
        raise UsageError(
            f"there is no image {reference} on this machine",
            hint="run `deploy build` first (or pass --tag with a tag built here)",
        ) from exc
    except _engine_errors() as exc:
        raise BuildError(f"cannot read {reference} from the Docker engine: {_reason(exc)}") from exc
    return attrs


def _follow(events: Iterable[Event], result: Kind, out: Output) -> str | None:
    """Show *events* on *out*; return the text of the last event of kind *result*."""
    found: str | None = None
    for kind, text in events:
        if kind == result:
            found = text
        elif kind == "step":
            match = _STEP.match(text)
            if match:
                done, _, total = match.group(1).partition("/")
                out.watch.update("build", "step", int(done), int(total), unit="steps", note=match.group(2))
        elif kind == "layer":
            out.progress(text)
        elif kind == "detail":
            out.detail(text)
    return found


def _registry(inventory: Inventory) -> _Registry:
    settings = inventory.app.registry_settings
    if settings is None:
        return _Registry(registry_server(inventory.app.image))
    return _Registry(settings.server, settings.username, settings.password_env)


def _auth(inventory: Inventory, password: SecretStr | None) -> dict[str, str] | None:
    """Credentials for the SDK; None lets it use the Docker credential store."""
    if password is None:
        return None
    settings = inventory.app.registry_settings
    if settings is None or settings.username is None:
        raise ConfigError(
            "app.registry.password_env is set but app.registry.username is not",
            hint="set app.registry.username, or drop password_env to use `docker login`",
        )
    return {"username": settings.username, "password": password.get_secret_value()}


def _split_reference(reference: str) -> tuple[str, str]:
    """``repo:tag`` or ``repo@sha256:…`` split into repository and tag or digest (default latest)."""
    if "@" in reference:
        repository, _, digest = reference.partition("@")
        return repository, digest
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return reference, "latest"
    return repository, tag


def _error_text(item: Mapping[str, Any]) -> str:
    detail = item.get("errorDetail")
    message = detail.get("message") if isinstance(detail, Mapping) else None
    return str(message or item.get("error") or "unknown error").strip()


def _reason(exc: BaseException) -> str:
    """A docker SDK error's own explanation, without the HTTP wrapping around it."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc or type(exc).__name__).strip()


def _scrub(text: str, password: SecretStr | None) -> str:
    secret = password.get_secret_value() if password is not None else ""
    return text.replace(secret, "***") if secret else text


@contextmanager
def _no_secret(password: SecretStr | None) -> Iterator[None]:
    """Whatever an engine or registry echoes, no error leaving this block carries the password."""
    try:
        yield
    except DeployError as exc:
        exc.message = _scrub(exc.message, password)
        exc.hint = _scrub(exc.hint, password) if exc.hint else exc.hint
        exc.args = (exc.message,)
        raise
