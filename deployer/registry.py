"""Read a release's digest from the registry's HTTP API, as Docker would, with no Docker engine.

One ``HEAD /v2/<repository>/manifests/<tag>`` over HTTPS answers with the digest the tag names
(an OCI index or Docker manifest list for a multi-platform image, else the manifest). It is sent
with the credentials the Docker CLI would use: ``app.registry``'s user and password, else the
Docker config (``$DOCKER_CONFIG/config.json``, default ``~/.docker/config.json``): its credential
helpers (``credHelpers``, ``credsStore``, run as ``docker-credential-<name> get``) or its
``auths``. Credentials go as Basic authentication; a registry that wants a token (``Bearer``
challenge) gets one from the realm it names first. The connection trusts what the engine trusts:
the system CAs plus ``/etc/docker/certs.d/<registry>/*.crt`` (and a client certificate
``*.cert``/``*.key`` from there). Redirects are not followed, so no credential goes elsewhere.

The standard library speaks HTTP here rather than ``requests``: it trusts the system CAs as the
engine does (``requests`` trusts certifi's bundle instead), honours ``HTTPS_PROXY``/``NO_PROXY``
too, and costs a fraction of ``requests``' import on the way to the first host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.config import HUB_NAMES, credentials_key, registry_server
from deployer.errors import ConfigError, RegistryError, TagNotFound, UsageError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from deployer.config import Inventory

CERTS_D = Path("/etc/docker/certs.d")
HUB = "docker.io"
HUB_HOST = "registry-1.docker.io"
TIMEOUT = 30.0
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PARAM = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_NOT_FOUND = "credentials not found"
_PLAIN_HTTP = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")


@dataclass(frozen=True)
class Location:
    """Where an image repository lives: the registry as Docker names it, its API host, the path."""

    server: str
    host: str
    repository: str

    @property
    def key(self) -> str:
        """The key of its credentials in the Docker config."""
        return credentials_key(self.server)


@dataclass(frozen=True)
class Credentials:
    """A user and password (or identity token), and where they came from, for messages."""

    username: str
    password: str = field(repr=False)
    source: str
    identity_token: str = field(default="", repr=False)


def locate(image: str) -> Location:
    """``registry.example.com:5000/acme/web``, ``acme/web`` (Docker Hub), ``web`` (``library/web``)."""
    server = registry_server(image)
    repository = image[len(server) + 1 :] if image.startswith(f"{server}/") else image
    if server in HUB_NAMES:
        return Location(HUB, HUB_HOST, repository if "/" in repository else f"library/{repository}")
    return Location(server, server, repository)


def challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` as (``bearer``, its parameters)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _PARAM.finditer(rest):
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
    return scheme.lower(), params


def docker_config(environ: Mapping[str, str] | None = None) -> Path:
    """The Docker CLI's config file: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = (os.environ if environ is None else environ).get("DOCKER_CONFIG")
    return (Path(directory) if directory else Path.home() / ".docker") / "config.json"


def stored_credentials(key: str, path: Path) -> Credentials | None:
    """What ``docker login`` stored for *key* in the config at *path*: its helper's, else its auths'."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable Docker config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a Docker config (expected a JSON object)")
    host = _hostname(key)
    helpers = _mapping(data.get("credHelpers"))
    helper = helpers.get(key) or helpers.get(host) or data.get("credsStore")
    if helper:
        return _from_helper(str(helper), key, path)
    auths = _mapping(data.get("auths"))
    entry = auths.get(key) or next((value for name, value in auths.items() if _hostname(name) == host), None)
    if not isinstance(entry, dict):
        return None
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError as exc:
            raise ConfigError(f"{path}: the auths entry for {key} is not base64 user:password") from exc
    token = str(entry.get("identitytoken") or "")
    return Credentials(username, password, str(path), token) if username or token else None


def digest(inventory: Inventory, tag: str, *, password: SecretStr | None, certs_d: Path = CERTS_D) -> str:
    """The digest of ``<app.image>:<tag>`` in the registry; TagNotFound if the registry lacks it."""
    if not _TAG.match(tag):
        raise UsageError(
            f"{tag!r} is not a tag",
            hint="a tag is up to 128 letters, digits, '_', '.' and '-', and starts with a letter, digit or '_'",
        )
    location = locate(inventory.app.image)
    reference = f"{inventory.app.image}:{tag}"
    failure = f"cannot read {reference} from the registry"
    credentials = _credentials(inventory, password, location, failure)
    url = f"https://{location.host}/v2/{location.repository}/manifests/{tag}"
    try:
        try:  # the system CAs in OpenSSL's hashed directory, looked up as needed: cheap
            status, found = _exchange(
                _trust(certs_d / location.server, every_system_ca=False), url, credentials, location, failure
            )
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise
            status, found = _exchange(
                _trust(certs_d / location.server, every_system_ca=True), url, credentials, location, failure
            )
    except (OSError, HTTPException) as exc:
        raise _unreachable(failure, exc, location, certs_d) from exc
    if status == 404:
        raise TagNotFound(
            f"{reference} is not in the registry", hint=f"build and push it: deploy push --tag {tag}"
        )
    if status in (401, 403):
        raise _refused(failure, status, location, credentials)
    if status != 200:
        raise RegistryError(f"{failure}: {location.host} answered HTTP {status}")
    if not _DIGEST.match(found):
        raise RegistryError(f"{failure}: {location.host} answered with no sha256 digest ({found[:80]!r})")
    return found


def local_digest(address: str, repository: str, tag: str) -> str | None:
    """The digest of *repository*:*tag* in the registry on this machine's loopback at *address*
    (plain HTTP, no credentials, no proxy), or None when it has no such tag."""
    url = f"http://{address}/v2/{repository}/manifests/{tag}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
    try:
        status, headers, _ = _send(opener, url, "HEAD", None)
    except (OSError, HTTPException) as exc:
        raise RegistryError(f"cannot read {repository}:{tag} from the local registry at {address}: {exc}") from exc
    found = headers.get("Docker-Content-Digest", "").strip()
    if status == 404:
        return None
    if status != 200 or not _DIGEST.match(found):
        raise RegistryError(
            f"cannot read {repository}:{tag} from the local registry at {address}: HTTP {status} {found[:80]!r}"
        )
    return found


# ---------------------------------------------------------------- helpers


def _exchange(
    context: ssl.SSLContext, url: str, credentials: Credentials | None, location: Location, failure: str
) -> tuple[int, str]:
    """The registry's status for *url* and the digest it names, after a token if it wants one."""
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects())
    authorization = _basic(credentials)
    status, headers, _ = _send(opener, url, "HEAD", authorization)
    wanted = headers.get("WWW-Authenticate", "")
    if status == 401 and wanted.lower().startswith("bearer"):
        authorization = "Bearer " + _token(opener, wanted, credentials, location, failure)
        status, headers, _ = _send(opener, url, "HEAD", authorization)
    found = headers.get("Docker-Content-Digest", "").strip()
    if status == 200 and not found:  # the header is optional: hash the manifest itself
        status, headers, body = _send(opener, url, "GET", authorization)
        found = "sha256:" + hashlib.sha256(body).hexdigest()
    return status, found


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _send(
    opener: urllib.request.OpenerDirector, url: str, method: str, authorization: str | None
) -> tuple[int, Message, bytes]:
    """Status, headers and (for GET) body of one request; an HTTP error status is an answer too."""
    request = urllib.request.Request(url, method=method, headers={"Accept": ", ".join(MANIFEST_TYPES)})
    if authorization:
        request.add_unredirected_header("Authorization", authorization)
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read() if method == "GET" else b""
    except urllib.error.HTTPError as answer:
        with answer:
            return answer.code, answer.headers, b""


def _credentials(
    inventory: Inventory, password: SecretStr | None, location: Location, failure: str
) -> Credentials | None:
    """``app.registry``'s user and password when it names a password, else the Docker config's."""
    settings = inventory.app.registry_settings
    if password is None:
        try:
            return stored_credentials(location.key, docker_config())
        except RegistryError as exc:
            raise RegistryError(f"{failure}: {exc.message}", hint=exc.hint) from exc
    if settings is None or settings.username is None:
        raise ConfigError(
            "app.registry.password_env is set but app.registry.username is not",
            hint="set app.registry.username, or drop password_env to use `docker login`",
        )
    source = f"app.registry.username ({settings.username}) and ${settings.password_env}"
    return Credentials(settings.username, password.get_secret_value(), source)


def _from_helper(name: str, key: str, path: Path) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for *key*'s credentials (none stored: None)."""
    program = f"docker-credential-{name}"
    try:
        done = subprocess.run(
            [program, "get"], input=key, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(
            f"cannot run the credential helper {program} that {path} names: {exc}",
            hint=f"install {program}, or set app.registry.username and app.registry.password_env",
        ) from exc
    said = (done.stdout.strip() or done.stderr.strip()).splitlines()
    if done.returncode != 0:
        if _NOT_FOUND in " ".join(said).lower():
            return None
        raise RegistryError(f"the credential helper {program} failed: {said[0] if said else done.returncode}")
    try:
        answer = json.loads(done.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(
            f"the credential helper {program} answered something other than credentials"
        ) from exc
    if username == "<token>":
        return Credentials("", "", program, identity_token=secret)
    return Credentials(username, secret, program)


def _token(
    opener: urllib.request.OpenerDirector,
    header: str,
    credentials: Credentials | None,
    location: Location,
    failure: str,
) -> str:
    """A bearer token for pulling from the realm the registry's challenge names."""
    _, params = challenge(header)
    realm = params.get("realm", "")
    if not realm.startswith("https://"):
        raise RegistryError(
            f"{failure}: {location.host} asks for a token from {realm or 'nowhere'}, not over HTTPS"
        )
    query = {
        "service": params.get("service", ""),
        "scope": params.get("scope") or f"repository:{location.repository}:pull",
    }
    request = urllib.request.Request(realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query))
    if credentials and credentials.identity_token:
        form = {
            **query,
            "grant_type": "refresh_token",
            "refresh_token": credentials.identity_token,
            "client_id": "deploy",
        }
        request = urllib.request.Request(realm, data=urllib.parse.urlencode(form).encode())
    elif credentials:
        request.add_unredirected_header("Authorization", _basic(credentials) or "")
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as refused:
        with refused:
            if refused.code in (401, 403):
                raise _refused(failure, refused.code, location, credentials) from refused
            raise RegistryError(
                f"{failure}: the token service {realm} answered HTTP {refused.code}"
            ) from refused
    except ValueError as exc:
        raise RegistryError(
            f"{failure}: the token service {realm} answered something other than JSON"
        ) from exc
    token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{failure}: the token service {realm} answered without a token")
    return token


def _basic(credentials: Credentials | None) -> str | None:
    if credentials is None or credentials.identity_token:
        return None
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _trust(directory: Path, *, every_system_ca: bool) -> ssl.SSLContext:
    """The system CAs, plus the CAs and client certificate in Docker's certs.d for the registry.

    Loading every system CA up front (OpenSSL's CA file) costs tens of milliseconds; its hashed
    CA directory holds the same CAs and is read only for the one a chain needs. The file is
    loaded too (*every_system_ca*) when the directory alone did not verify the registry.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if every_system_ca:
            context.load_default_certs()
        elif ssl.get_default_verify_paths().capath:
            context.load_verify_locations(capath=ssl.get_default_verify_paths().capath)
        for file in sorted(directory.iterdir()) if directory.is_dir() else []:
            if file.suffix == ".crt":
                context.load_verify_locations(cafile=str(file))
            elif file.suffix == ".cert":
                context.load_cert_chain(str(file), str(file.with_suffix(".key")))
    except OSError as exc:
        raise RegistryError(f"cannot use the certificates in {directory}: {exc}") from exc
    return context


def _refused(failure: str, status: int, location: Location, credentials: Credentials | None) -> RegistryError:
    """RegistryError for a registry (or its token service) refusing, with where to fix the credentials."""
    server = location.server
    if credentials is None:
        reason = "unauthorized: the registry wants credentials and none are set up"
        hint = f"run `docker login {server}`, or set app.registry.username and app.registry.password_env"
    else:
        reason = "unauthorized: the registry refused the credentials" if status == 401 else "denied"
        if credentials.source.startswith("app.registry"):
            hint = f"check {credentials.source.replace(' and $', ' and the password in $')}"
        else:
            hint = f"the credentials come from {credentials.source}: run `docker login {server}` again"
    return RegistryError(f"{failure}: {reason} (HTTP {status})", hint=hint)


def _unreachable(failure: str, exc: BaseException, location: Location, certs_d: Path) -> RegistryError:
    """RegistryError for a connection that failed before the registry answered."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    server = location.server
    if isinstance(reason, ssl.SSLCertVerificationError):
        return RegistryError(
            f"{failure}: the certificate of {location.host} is not trusted: {reason.verify_message}",
            hint=f"put the CA that signed it in {certs_d / server / 'ca.crt'}, or among the system CAs",
        )
    if isinstance(reason, ssl.SSLError) and any(word in str(reason) for word in _PLAIN_HTTP):
        return RegistryError(
            f"{failure}: {location.host} does not speak HTTPS",
            hint=f"{server} speaks plain HTTP: serve it over TLS",
        )
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return RegistryError(
        f"{failure}: cannot connect to {location.host}: {text}",
        hint=f"is the registry at {server} running and reachable? check app.image",
    )


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _hostname(key: str) -> str:
    """``https://host:port/v1/`` as Docker compares config keys: ``host:port``."""
    return key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
