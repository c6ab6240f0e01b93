"""The end-to-end tests' load generator and WebSocket probe, against servers on loopback."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.server import Server, ServerConnection, serve

from tests.e2e.load import Load, Sample, Target, WsProbe, request, summarize, ws_exchange
from tests.lab import pki


class Handler(http.server.BaseHTTPRequestHandler):
    """/version: "v1"; /host: the Host header; /fail: 500; /hang: no answer for 3 s."""

    def do_GET(self) -> None:
        if self.path == "/hang":
            time.sleep(3)
        status, body = {"/version": (200, "v1\n"), "/host": (200, self.headers["Host"]),
                        "/fail": (500, "broken\n")}.get(self.path, (404, "not found\n"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def port_of(server: http.server.ThreadingHTTPServer | Server) -> int:
    return int(server.socket.getsockname()[1])


def closed_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_run_ends_by_itself_at_max_requests_and_counts_every_answer(server: http.server.ThreadingHTTPServer) -> None:
    port = port_of(server)
    good = Target("127.0.0.1", port, host_header="web.lab")
    bad = Target("127.0.0.1", port, path="/fail")
    load = Load([good, bad], rate=100, max_requests=40).start()
    assert load.wait(timeout=30), "the run did not end by itself"
    summary = load.summary()
    assert summary.total == 40
    assert summary.failed == 20
    assert summary.bodies == {"v1"}
    assert summary.by_target == {good.name: (20, 0), bad.name: (20, 20)}
    assert len(summary.examples) == 5
    assert all(s.status == 500 and s.body == "broken" for s in summary.examples)
    assert "40 requests, 20 failed; bodies ['v1']" in str(summary)


def test_a_run_ends_by_itself_at_max_seconds(server: http.server.ThreadingHTTPServer) -> None:
    load = Load([Target("127.0.0.1", port_of(server))], rate=10, max_seconds=0.5).start()
    assert load.wait(timeout=30), "the run did not end by itself"
    assert 1 <= load.summary().total <= 5  # 10 a second for half a second
    assert not load.running


def test_stop_ends_the_run_and_refused_connections_are_failures(server: http.server.ThreadingHTTPServer) -> None:
    target = Target("127.0.0.1", closed_port())
    with Load([target], rate=50, max_seconds=60) as load:
        while load.summary().total < 3:
            time.sleep(0.01)
    summary = load.summary()
    assert not load.running
    assert summary.failed == summary.total >= 3
    assert summary.bodies == frozenset()
    assert summary.examples[0].status is None
    assert summary.examples[0].error is not None and "ConnectionRefusedError" in summary.examples[0].error


def test_a_request_that_outlives_its_timeout_is_a_failure(server: http.server.ThreadingHTTPServer) -> None:
    sample = request(Target("127.0.0.1", port_of(server), path="/hang"), timeout=0.2)
    assert not sample.ok
    assert sample.error is not None and "timed out" in sample.error


def test_the_host_header_is_the_given_name_with_a_port_unless_default(server: http.server.ThreadingHTTPServer) -> None:
    port = port_of(server)
    assert request(Target("127.0.0.1", port, host_header="web.lab", path="/host")).body == f"web.lab:{port}"
    assert request(Target("127.0.0.1", port, path="/host")).body == f"127.0.0.1:{port}"


def test_summary_counts_non_2xx_and_errors_and_keeps_bodies_of_successes() -> None:
    target = Target("10.0.0.1")
    samples = [Sample(3.0, 0.1, target, 200, "v2", None), Sample(1.0, 0.1, target, 200, "v1", None),
               Sample(2.0, 0.1, target, 502, "bad gateway", None),
               Sample(4.0, 0.1, target, None, "", "ConnectionResetError: reset")]
    summary = summarize(samples, examples=1)
    assert (summary.total, summary.failed, summary.bodies) == (4, 2, {"v1", "v2"})
    assert [s.status for s in summary.examples] == [502], "the first failure in time is kept"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"address": "web.lab"}, "must be an IP address"),
    ({"address": "8.8.8.8"}, "not on a private network or loopback"),
    ({"address": "127.0.0.1", "scheme": "ftp"}, "scheme must be http or https"),
    ({"address": "127.0.0.1", "port": 0}, "port must be 1 to 65535"),
    ({"address": "127.0.0.1", "path": "version"}, "path must start with /"),
])
def test_targets_outside_the_lab_or_malformed_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Target(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate": 0}, "rate must be above 0"),
    ({"rate": 1000}, "at most 100 a second"),
    ({"max_seconds": 3600}, "max_seconds must be above 0 and at most 900"),
    ({"max_requests": 10**6}, "max_requests must be 1 to 100000"),
    ({"timeout": 0}, "timeout must be above 0"),
    ({"workers": 500}, "workers must be 1 to 64"),
])
def test_loads_beyond_the_bounds_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Load([Target("127.0.0.1")], **kwargs)  # type: ignore[arg-type]


def test_no_targets_is_refused() -> None:
    with pytest.raises(ValueError, match="give 1 to 16 targets"):
        Load([])


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    pki.make_ca(ca, ca_key)
    cert, key = directory / "web.crt", directory / "web.key"
    pki.make_server_cert(cert, key, ca, ca_key, [], ["web.lab"])
    return ca, cert, key


def test_https_verifies_the_certificate_for_the_host_name_not_the_ip(tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        port = port_of(httpd)
        good = request(Target("127.0.0.1", port, "https", "web.lab", ca, "/version"))
        wrong_name = request(Target("127.0.0.1", port, "https", "other.lab", ca, "/version"))
        no_ca = request(Target("127.0.0.1", port, "https", "web.lab", None, "/version"))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert (good.status, good.body, good.error) == (200, "v1", None)
    assert wrong_name.error is not None and "other.lab" in wrong_name.error
    assert no_ca.error is not None and "CERTIFICATE_VERIFY_FAILED" in no_ca.error


@pytest.fixture
def ws_server() -> Iterator[Server]:
    def process_request(connection: ServerConnection, request: object) -> None:
        return None

    def echo(connection: ServerConnection) -> None:
        host = connection.request.headers["Host"] if connection.request else "?"
        for message in connection:
            connection.send(f"v1:{message}:{host}")

    with serve(echo, "127.0.0.1", 0, process_request=process_request) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.shutdown()
        thread.join()


def test_ws_exchange_sends_the_host_header(ws_server: Server) -> None:
    port = port_of(ws_server)
    assert ws_exchange(Target("127.0.0.1", port, host_header="chat.lab", path="/ws"), "hi") == f"v1:hi:chat.lab:{port}"


def test_ws_probe_records_answers_and_a_close_by_the_server(ws_server: Server) -> None:
    probe = WsProbe(Target("127.0.0.1", port_of(ws_server), path="/ws"), interval=0.01).start()
    while len(probe.result().answers) < 3:
        time.sleep(0.01)
    ws_server.shutdown()  # closes open connections with 1001 (going away)
    assert probe.wait_closed(timeout=30)
    result = probe.stop()
    assert result.connected and result.error is None
    assert result.close_code == 1001 and not result.closed_by_probe
    assert result.closed_at is not None
    assert set(result.versions) == {"v1"} and len(result.answers) >= 3
    assert result.unanswered <= 1


def test_ws_probe_stopped_by_the_test_closes_normally(ws_server: Server) -> None:
    with WsProbe(Target("127.0.0.1", port_of(ws_server), path="/ws"), interval=0.01) as probe:
        while not probe.result().answers:
            time.sleep(0.01)
    result = probe.result()
    assert result.connected and result.closed_by_probe and result.close_code == 1000
    assert result.answers[0][1].startswith("v1:m1:")


def test_ws_probe_that_cannot_connect_says_why() -> None:
    result = WsProbe(Target("127.0.0.1", closed_port(), path="/ws")).start().stop()
    assert not result.connected
    assert result.error is not None and "ConnectionRefusedError" in result.error
