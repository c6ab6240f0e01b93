"""A registry's manifest and token endpoints over TLS on 127.0.0.1, scripted per test.

It answers ``HEAD``/``GET /v2/<repository>/manifests/<tag>`` and ``GET /token`` as a
distribution registry does with htpasswd (``Basic``) or token (``Bearer``) authentication, and
records every request it was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from tests.lab import pki

USER = "deploy"
PASSWORD = "s3cret-Pa55word"
TOKEN = "t0ken-for-pulling"
MANIFEST = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


@dataclass(frozen=True)
class Seen:
    """One request the registry received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakeRegistry:
    """What the registry holds and how it authenticates; ``seen`` lists the requests it got."""

    address: str
    auth: Literal["none", "basic", "bearer"] = "basic"
    tags: dict[str, bytes] = field(default_factory=lambda: {"acme/web:v1": MANIFEST})
    send_digest: bool = True
    status: int | None = None  # answer every manifest request with this status instead
    token_status: int | None = None  # answer every token request with this status instead
    realm_query: str = ""  # a query string the challenge's realm carries, e.g. "?account=x"
    seen: list[Seen] = field(default_factory=list)

    def _basic_ok(self, header: str | None) -> bool:
        good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return header == good

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        headers = {key.lower(): value for key, value in handler.headers.items()}
        self.seen.append(Seen(handler.command, url.path, parse_qs(url.query), headers))
        authorization = headers.get("authorization")
        if url.path == "/token":
            if self.token_status is not None:
                return self._send(handler, self.token_status, {})
            if not self._basic_ok(authorization) and authorization is not None:
                return self._send(handler, 401, {"WWW-Authenticate": 'Basic realm="token"'})
            return self._send(
                handler, 200, {"Content-Type": "application/json"}, json.dumps({"token": TOKEN}).encode()
            )
        if self.auth == "basic" and not self._basic_ok(authorization):
            return self._send(handler, 401, {"WWW-Authenticate": 'Basic realm="fake"'})
        if self.auth == "bearer" and authorization != f"Bearer {TOKEN}":
            challenge = (
                f'Bearer realm="https://{self.address}/token{self.realm_query}",service="fake-registry",'
                'scope="repository:acme/web:pull"'
            )
            return self._send(handler, 401, {"WWW-Authenticate": challenge})
        if self.status is not None:
            return self._send(handler, self.status, {})
        repository, _, tag = url.path.removeprefix("/v2/").partition("/manifests/")
        body = self.tags.get(f"{repository}:{tag}")
        if body is None:
            return self._send(handler, 404, {})
        extra = (
            {"Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest()}
            if self.send_digest
            else {}
        )
        self._send(handler, 200, {"Content-Type": json.loads(body)["mediaType"], **extra}, body)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes = b""
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key = directory / "server.crt", directory / "server.key"
    pki.make_ca(ca, ca_key)
    pki.make_server_cert(cert, key, ca, ca_key, ["127.0.0.1"], ["localhost"])
    return ca, cert, key


@contextmanager
def serve(cert: Path, key: Path, *, tls: bool = True) -> Iterator[FakeRegistry]:
    """Run a FakeRegistry on a free port of 127.0.0.1 until the block ends."""
    registry: FakeRegistry

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            registry.answer(self)

        def do_GET(self) -> None:
            registry.answer(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    registry = FakeRegistry(f"127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
