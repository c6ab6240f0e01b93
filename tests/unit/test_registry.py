"""Reading a release's digest from the registry's API: names, challenges, stored credentials,
and whole exchanges with a TLS registry on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployer import config, registry
from deployer.errors import ConfigError, RegistryError, TagNotFound, UsageError
from deployer.registry import Credentials, Location
from tests.unit import fakeregistry
from tests.unit.fakeregistry import DIGEST, PASSWORD, TOKEN, USER, FakeRegistry

HUB = "registry-1.docker.io"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "registry.example.com:5000/acme/web",
            Location("registry.example.com:5000", "registry.example.com:5000", "acme/web"),
        ),
        ("ghcr.io/acme/team/web", Location("ghcr.io", "ghcr.io", "acme/team/web")),
        ("localhost/web", Location("localhost", "localhost", "web")),
        ("localhost:5000/acme/web", Location("localhost:5000", "localhost:5000", "acme/web")),
        ("172.30.57.2:5000/acme/web", Location("172.30.57.2:5000", "172.30.57.2:5000", "acme/web")),
        ("acme/web", Location("docker.io", HUB, "acme/web")),
        ("web", Location("docker.io", HUB, "library/web")),
        ("docker.io/web", Location("docker.io", HUB, "library/web")),
        ("docker.io/library/web", Location("docker.io", HUB, "library/web")),
        ("index.docker.io/acme/web", Location("docker.io", HUB, "acme/web")),
        ("registry-1.docker.io/acme/web", Location("docker.io", HUB, "acme/web")),
    ],
)
def test_locate_names_the_registry_docker_would_ask(image: str, expected: Location) -> None:
    assert registry.locate(image) == expected


def test_docker_hub_credentials_are_filed_under_the_index_url() -> None:
    assert registry.locate("acme/web").key == "https://index.docker.io/v1/"
    assert registry.locate("ghcr.io/acme/web").key == "ghcr.io"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="deploy-lab"', ("basic", {"realm": "deploy-lab"})),
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/web:pull"',
            (
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/web:pull",
                },
            ),
        ),
        (
            'Bearer realm="https://r.example/token", scope="repository:a/b:pull,push", service=r.example',
            (
                "bearer",
                {
                    "realm": "https://r.example/token",
                    "scope": "repository:a/b:pull,push",
                    "service": "r.example",
                },
            ),
        ),
        (r'bearer Realm="https://r/t?a=\"b\""', ("bearer", {"realm": 'https://r/t?a="b"'})),
        ("Basic", ("basic", {})),
    ],
)
def test_challenge_parses_www_authenticate(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert registry.challenge(header) == expected


# ---------------------------------------------------------------- stored credentials


def _config(directory: Path, data: object) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(data))
    return path


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on PATH for fake docker-credential-* programs."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory


def _helper(directory: Path, name: str, script: str) -> Path:
    """A docker-credential-NAME that runs *script* (sh) and logs its stdin to NAME.stdin."""
    program = directory / f"docker-credential-{name}"
    program.write_text(f'#!/bin/sh\ncat > "{directory}/{name}.stdin"\n{script}\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def test_docker_config_respects_docker_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ci")
    assert registry.docker_config({}) == Path("/home/ci/.docker/config.json")
    assert registry.docker_config({"DOCKER_CONFIG": "/etc/ci-docker"}) == Path("/etc/ci-docker/config.json")


def test_no_docker_config_means_no_credentials(tmp_path: Path) -> None:
    assert registry.stored_credentials("ghcr.io", tmp_path / "config.json") is None


def test_auths_entry_is_decoded_and_matched_by_host(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        {
            "auths": {
                "ghcr.io": {"auth": _auth("octo", "pass:with:colons")},
                "https://registry.example.com:5000/v1/": {"auth": _auth("legacy", "old")},
                "https://index.docker.io/v1/": {"auth": _auth("hubuser", "hubpass")},
                "quay.io": {"username": "q", "password": "qp"},
                "acr.example.io": {
                    "auth": _auth("00000000-0000-0000-0000-000000000000", ""),
                    "identitytoken": "rt",
                },
                "empty.example": {},
            }
        },
    )
    found = {
        key: registry.stored_credentials(key, path)
        for key in (
            "ghcr.io",
            "registry.example.com:5000",
            "https://index.docker.io/v1/",
            "quay.io",
            "acr.example.io",
            "empty.example",
            "other.example",
        )
    }
    source = str(path)
    assert found == {
        "ghcr.io": Credentials("octo", "pass:with:colons", source),
        "registry.example.com:5000": Credentials("legacy", "old", source),
        "https://index.docker.io/v1/": Credentials("hubuser", "hubpass", source),
        "quay.io": Credentials("q", "qp", source),
        "acr.example.io": Credentials(
            "00000000-0000-0000-0000-000000000000", "", source, identity_token="rt"
        ),
        "empty.example": None,
        "other.example": None,
    }


def test_credentials_never_show_in_their_repr() -> None:
    text = repr(Credentials("octo", "hunter2-secret", "x", identity_token="tok-secret"))
    assert "hunter2-secret" not in text and "tok-secret" not in text


def test_a_credential_helper_for_the_host_wins_over_the_store_and_auths(
    tmp_path: Path, helpers: Path
) -> None:
    _helper(
        helpers, "ghcr", """echo '{"ServerURL": "ghcr.io", "Username": "octo", "Secret": "from-helper"}'"""
    )
    _helper(helpers, "store", "echo 'store was asked' >&2; exit 1")
    path = _config(
        tmp_path,
        {
            "credsStore": "store",
            "credHelpers": {"ghcr.io": "ghcr"},
            "auths": {"ghcr.io": {"auth": _auth("a", "b")}},
        },
    )
    assert registry.stored_credentials("ghcr.io", path) == Credentials(
        "octo", "from-helper", "docker-credential-ghcr"
    )
    assert (helpers / "ghcr.stdin").read_text() == "ghcr.io"


def test_the_credentials_store_answers_for_every_registry(tmp_path: Path, helpers: Path) -> None:
    _helper(helpers, "desktop", """echo '{"Username": "hubuser", "Secret": "hubsecret"}'""")
    path = _config(tmp_path, {"credsStore": "desktop", "auths": {"https://index.docker.io/v1/": {}}})
    found = registry.stored_credentials("https://index.docker.io/v1/", path)
    assert found == Credentials("hubuser", "hubsecret", "docker-credential-desktop")
    assert (helpers / "desktop.stdin").read_text() == "https://index.docker.io/v1/"


def test_a_helper_with_nothing_stored_means_anonymous_as_for_docker(tmp_path: Path, helpers: Path) -> None:
    _helper(helpers, "pass", "echo 'credentials not found in native keychain'; exit 1")
    path = _config(tmp_path, {"credsStore": "pass", "auths": {"ghcr.io": {"auth": _auth("a", "b")}}})
    assert registry.stored_credentials("ghcr.io", path) is None


def test_a_helper_identity_token(tmp_path: Path, helpers: Path) -> None:
    _helper(helpers, "acr", """echo '{"Username": "<token>", "Secret": "refresh-me"}'""")
    path = _config(tmp_path, {"credHelpers": {"acr.example.io": "acr"}})
    found = registry.stored_credentials("acr.example.io", path)
    assert found == Credentials("", "", "docker-credential-acr", identity_token="refresh-me")


def test_a_missing_or_failing_helper_is_a_registry_error(tmp_path: Path, helpers: Path) -> None:
    path = _config(tmp_path, {"credsStore": "nowhere"})
    with pytest.raises(RegistryError) as missing:
        registry.stored_credentials("ghcr.io", path)
    assert missing.value.exit_code == 4
    assert missing.value.message.startswith(
        f"cannot run the credential helper docker-credential-nowhere that {path} names: "
    )
    assert missing.value.hint == (
        "install docker-credential-nowhere, or set app.registry.username and app.registry.password_env"
    )

    _helper(helpers, "broken", "echo 'gpg: decryption failed' >&2; exit 1")
    with pytest.raises(RegistryError) as failing:
        registry.stored_credentials("ghcr.io", _config(tmp_path, {"credsStore": "broken"}))
    assert (
        failing.value.message
        == "the credential helper docker-credential-broken failed: gpg: decryption failed"
    )


def test_an_unreadable_docker_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        registry.stored_credentials("ghcr.io", path)
    assert caught.value.message.startswith(f"{path}: not a readable Docker config: ")
    with pytest.raises(ConfigError, match="not a Docker config"):
        registry.stored_credentials("ghcr.io", _config(tmp_path, ["a list"]))
    assert (
        registry.stored_credentials("ghcr.io", _config(tmp_path, {"auths": "x", "credHelpers": []})) is None
    )


# ---------------------------------------------------------------- whole exchanges


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return fakeregistry.make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG directory; no proxy in the way of 127.0.0.1."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return directory


@pytest.fixture
def fake(certificates: tuple[Path, Path, Path], docker_config: Path) -> Iterator[FakeRegistry]:
    _, cert, key = certificates
    with fakeregistry.serve(cert, key) as served:
        yield served


@pytest.fixture
def certs_d(tmp_path: Path, certificates: tuple[Path, Path, Path], fake: FakeRegistry) -> Path:
    """Docker's certs.d with the fake registry's CA, as `/etc/docker/certs.d/<registry>/ca.crt`."""
    directory = tmp_path / "certs.d"
    (directory / fake.address).mkdir(parents=True)
    (directory / fake.address / "ca.crt").write_bytes(certificates[0].read_bytes())
    return directory


def _inventory(address: str, *, with_registry: bool = True) -> config.Inventory:
    settings = (
        f"  registry: {{server: '{address}', username: {USER}, password_env: REGISTRY_PASSWORD}}\n"
        if with_registry
        else ""
    )
    return config.parse(
        f"app:\n  name: web\n  image: '{address}/acme/web'\n{settings}hosts: {{prod: [h1]}}\n"
    )


def _digest(fake: FakeRegistry, certs_d: Path, password: str | None = PASSWORD, tag: str = "v1") -> str:
    inventory = _inventory(fake.address, with_registry=password is not None)
    secret = SecretStr(password) if password is not None else None
    return registry.digest(inventory, tag, password=secret, certs_d=certs_d)


def test_one_head_request_with_basic_auth_reads_the_digest(fake: FakeRegistry, certs_d: Path) -> None:
    assert _digest(fake, certs_d) == DIGEST
    [request] = fake.seen
    assert (request.method, request.path) == ("HEAD", "/v2/acme/web/manifests/v1")
    assert request.headers["accept"] == (
        "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    )
    assert request.headers["authorization"] == "Basic " + _auth(USER, PASSWORD)


def test_an_unknown_tag_is_tag_not_found(fake: FakeRegistry, certs_d: Path) -> None:
    with pytest.raises(TagNotFound) as caught:
        _digest(fake, certs_d, tag="0123456789ab")
    assert caught.value.exit_code == 2
    assert caught.value.message == f"{fake.address}/acme/web:0123456789ab is not in the registry"
    assert caught.value.hint == "build and push it: deploy push --tag 0123456789ab"


@pytest.mark.parametrize("tag", ["a b", "../v1", "v1?x=1", "-v1", ".v1", "x" * 129, ""])
def test_a_malformed_tag_is_bad_input_and_sends_nothing(fake: FakeRegistry, certs_d: Path, tag: str) -> None:
    with pytest.raises(UsageError) as caught:
        _digest(fake, certs_d, tag=tag)
    assert caught.value.exit_code == 2
    assert caught.value.message == f"{tag!r} is not a tag"
    assert fake.seen == []


def test_the_longest_tag_is_asked_for(fake: FakeRegistry, certs_d: Path) -> None:
    tag = "_" + "V.1-x" * 25 + "ab"
    fake.tags[f"acme/web:{tag}"] = fakeregistry.MANIFEST
    assert len(tag) == 128
    assert _digest(fake, certs_d, tag=tag) == DIGEST


def test_a_wrong_password_is_refused_and_never_shown(fake: FakeRegistry, certs_d: Path) -> None:
    wrong = "Wr0ng-pa55word-do-not-show"
    with pytest.raises(RegistryError) as caught:
        _digest(fake, certs_d, password=wrong)
    assert caught.value.exit_code == 4
    assert caught.value.message == (
        f"cannot read {fake.address}/acme/web:v1 from the registry: "
        "unauthorized: the registry refused the credentials (HTTP 401)"
    )
    assert caught.value.hint == "check app.registry.username (deploy) and the password in $REGISTRY_PASSWORD"
    shown = f"{caught.value} {caught.value.hint} {caught.value!r} {caught.value.__cause__!r}"
    assert wrong not in shown and _auth(USER, wrong) not in shown


def test_no_credentials_at_all_hints_at_docker_login(fake: FakeRegistry, certs_d: Path) -> None:
    with pytest.raises(RegistryError) as caught:
        _digest(fake, certs_d, password=None)
    assert caught.value.message.endswith(
        "unauthorized: the registry wants credentials and none are set up (HTTP 401)"
    )
    assert caught.value.hint == (
        f"run `docker login {fake.address}`, or set app.registry.username and app.registry.password_env"
    )
    assert "authorization" not in fake.seen[0].headers


def test_docker_config_credentials_are_used_without_app_registry(
    fake: FakeRegistry, certs_d: Path, docker_config: Path
) -> None:
    _config(docker_config, {"auths": {fake.address: {"auth": _auth(USER, PASSWORD)}}})
    assert _digest(fake, certs_d, password=None) == DIGEST

    _config(docker_config, {"auths": {fake.address: {"auth": _auth(USER, "stale")}}})
    with pytest.raises(RegistryError) as caught:
        _digest(fake, certs_d, password=None)
    assert caught.value.hint == (
        f"the credentials come from {docker_config / 'config.json'}: run `docker login {fake.address}` again"
    )


def test_a_token_registry_is_asked_for_a_bearer_token_first(
    fake: FakeRegistry, certs_d: Path, docker_config: Path
) -> None:
    fake.auth = "bearer"
    _config(docker_config, {"auths": {fake.address: {"auth": _auth(USER, PASSWORD)}}})
    assert _digest(fake, certs_d, password=None) == DIGEST
    head, token, again = fake.seen
    assert (head.method, head.path) == ("HEAD", "/v2/acme/web/manifests/v1")
    assert (token.method, token.path) == ("GET", "/token")
    assert token.query == {"service": ["fake-registry"], "scope": ["repository:acme/web:pull"]}
    assert token.headers["authorization"] == "Basic " + _auth(USER, PASSWORD)
    assert (again.method, again.headers["authorization"]) == ("HEAD", f"Bearer {TOKEN}")


def test_a_token_realm_with_its_own_query(fake: FakeRegistry, certs_d: Path) -> None:
    fake.auth, fake.realm_query = "bearer", "?account=ci"
    assert _digest(fake, certs_d) == DIGEST
    assert fake.seen[1].query == {
        "account": ["ci"],
        "service": ["fake-registry"],
        "scope": ["repository:acme/web:pull"],
    }


def test_a_public_image_on_a_token_registry_needs_no_credentials(fake: FakeRegistry, certs_d: Path) -> None:
    fake.auth = "bearer"
    assert _digest(fake, certs_d, password=None) == DIGEST
    assert [("authorization" in seen.headers) for seen in fake.seen] == [False, False, True]


def test_a_token_service_refusing_the_credentials(fake: FakeRegistry, certs_d: Path) -> None:
    fake.auth = "bearer"
    with pytest.raises(RegistryError) as caught:
        _digest(fake, certs_d, password="wrong")
    assert caught.value.message.endswith("unauthorized: the registry refused the credentials (HTTP 401)")


def test_a_failing_token_service(fake: FakeRegistry, certs_d: Path) -> None:
    fake.auth, fake.token_status = "bearer", 502
    with pytest.raises(RegistryError) as caught:
        _digest(fake, certs_d)
    assert caught.value.message == (
        f"cannot read {fake.address}/acme/web:v1 from the registry: "
        f"the token service https://{fake.address}/token answered HTTP 502"
    )


def test_without_the_digest_header_the_manifest_is_hashed(fake: FakeRegistry, certs_d: Path) -> None:
    fake.send_digest = False
    assert _digest(fake, certs_d) == DIGEST
    assert [seen.method for seen in fake.seen] == ["HEAD", "GET"]


def test_other_answers_are_registry_errors(fake: FakeRegistry, certs_d: Path) -> None:
    fake.status = 503
    with pytest.raises(RegistryError) as caught:
        _digest(fake, certs_d)
    assert (
        caught.value.message
        == f"cannot read {fake.address}/acme/web:v1 from the registry: {fake.address} answered HTTP 503"
    )


def test_an_untrusted_certificate_names_where_its_ca_goes(fake: FakeRegistry, tmp_path: Path) -> None:
    empty = tmp_path / "no-certs.d"
    with pytest.raises(RegistryError) as caught:
        _digest(fake, empty)
    assert caught.value.exit_code == 4
    assert caught.value.message == (
        f"cannot read {fake.address}/acme/web:v1 from the registry: "
        f"the certificate of {fake.address} is not trusted: unable to get local issuer certificate"
    )
    assert (
        caught.value.hint
        == f"put the CA that signed it in {empty}/{fake.address}/ca.crt, or among the system CAs"
    )
    assert fake.seen == []


def test_the_system_cas_are_trusted_too(
    fake: FakeRegistry, tmp_path: Path, certificates: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates[0]))  # how OpenSSL is told of the system's CAs
    assert _digest(fake, tmp_path / "no-certs.d") == DIGEST


def test_the_system_ca_directory_is_trusted(
    fake: FakeRegistry, tmp_path: Path, certificates: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "system-cas"
    directory.mkdir()
    (directory / "lab.pem").write_bytes(certificates[0].read_bytes())
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-bundle.pem"))
    assert _digest(fake, tmp_path / "no-certs.d") == DIGEST


def test_an_unreachable_registry(docker_config: Path, tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    with pytest.raises(RegistryError) as caught:
        registry.digest(_inventory(address), "v1", password=SecretStr(PASSWORD), certs_d=tmp_path)
    assert caught.value.message == (
        f"cannot read {address}/acme/web:v1 from the registry: cannot connect to {address}: Connection refused"
    )
    assert caught.value.hint == f"is the registry at {address} running and reachable? check app.image"


def test_a_plain_http_registry(
    certificates: tuple[Path, Path, Path], docker_config: Path, tmp_path: Path
) -> None:
    with (
        fakeregistry.serve(certificates[1], certificates[2], tls=False) as plain,
        pytest.raises(RegistryError) as caught,
    ):
        _digest(plain, tmp_path)
    assert caught.value.message.endswith(f"from the registry: {plain.address} does not speak HTTPS")
    assert caught.value.hint == f"{plain.address} speaks plain HTTP: serve it over TLS"


# ---------------------------------------------------------------- no engine, no Docker SDK


def _imported(args: list[str], env: dict[str, str]) -> tuple[int, str, set[str]]:
    """Exit code, stderr (without the import times) and the modules `deploy ARGS` imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deployer", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    lines = done.stderr.splitlines()
    modules = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    return done.returncode, "\n".join(line for line in lines if not line.startswith("import time:")), modules


@pytest.mark.parametrize("verb", ["rollout", "rollback", "status", "history"])
def test_fleet_commands_never_load_the_docker_sdk(
    verb: str, fake: FakeRegistry, certificates: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        f"app:\n  name: web\n  image: '{fake.address}/acme/web'\n"
        f"  registry: {{server: '{fake.address}', username: {USER}, password_env: REGISTRY_PASSWORD}}\n"
        "ssh: {config_file: /nonexistent, connect_timeout: 0.01}\n"
        "hosts: {prod: [192.0.2.1]}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2]),
        "REGISTRY_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": str(certificates[0]),
        "DOCKER_HOST": "unix:///nonexistent.sock",
    }
    args = ["-i", str(inventory), verb, "--hosts", "prod", *(["--tag", "v1"] if verb == "rollout" else [])]
    code, stderr, modules = _imported(args, env)
    assert code == 5, stderr  # the host does not answer: everything before it ran
    assert "deployer.transport" in modules
    if verb == "rollout":
        assert f"release v1 is {fake.address}/acme/web@{DIGEST}" in stderr
    assert {name for name in modules if name.split(".")[0] in ("docker", "requests", "urllib3")} == set()
