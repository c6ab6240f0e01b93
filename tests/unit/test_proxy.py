"""The reverse proxy: its commands compared exactly, its answers parsed, its routes changed."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from deployer import proxy, switch
from deployer.config import App
from deployer.errors import CommandError, UsageError
from deployer.plan import Release
from deployer.state import Container, Entry, HostState

from .words import started

APP = App.model_validate(
    {
        "name": "web",
        "image": "r/web",
        "container": {"stop_timeout": 3},
        "proxy": {"hosts": ["web.example.com"], "app_port": 8080, "drain_timeout": 5},
    }
)
API = App.model_validate(
    {"name": "api", "image": "r/api", "proxy": {"hosts": ["api.example.com"], "app_port": 9000, "tls": "internal"}}
)


def _state(*containers: tuple[str, str]) -> HostState:
    return HostState(
        tuple(Container(f"web-{r}", r, f"sha256:{r}", s, str(i)) for i, (r, s) in enumerate(containers)),
        tuple(Entry("t", "rollout", r, f"sha256:{r}", "me", "ok") for r, _ in containers),
    )


_words = switch.lines


def test_start_first_starts_the_new_release_beside_the_old_and_stops_the_old_last() -> None:
    step = switch.start_first(switch.Move(APP, _state(("v1", "running")), "v2", image=Release("r/web", "v2", "sha256:2")))
    words = _words(step.actions())
    assert words[0].startswith("docker create --name web-v2 ") and "--network deploy-proxy" in words[0]
    assert "--publish" not in words[0]
    assert words[1:] == [
        *started("web-v2", str(proxy.connect("web-v1"))),
        "# route the app's traffic to web-v2",
        "# wait until no request is in flight to web-v1, then stop it",
    ], "the old release joins the proxy's network in the round trip that starts the new one"
    assert _words(step.undo()) == [
        *started("web-v1"),
        "# route the app's traffic to web-v1",
        "# wait until no request is in flight to web-v2, then stop it",
    ], "going back drops no request either"
    assert _words(step.undo(1)) == [
        "# wait until no request is in flight to web-v2, then stop it",
    ], "an unhealthy release never had the route: the old one serves throughout"
    back = switch.start_first(switch.Move(APP, _state(("v1", "exited"), ("v2", "running")), "v1"))
    assert _words(back.actions())[0] == started("web-v1", str(proxy.connect("web-v1")), str(proxy.connect("web-v2")))[0], (
        "a kept release, and the running one, may predate the proxy: both join its network first"
    )


def test_the_strategy_follows_the_inventory() -> None:
    plain = App.model_validate({"name": "w", "image": "r/w"})
    assert switch.plan(switch.Move(APP, _state(("v1", "running")), "v2")).steps[-1].does == (switch.Drain("web-v1", 3),)
    last = switch.plan(switch.Move(plain, _state(("v1", "running")), "v2")).steps[-1].does
    assert _words(list(last)) == started("w-v2", "docker container stop --time 10 web-v1")


def test_a_first_route_is_added_with_the_proxy_skeleton() -> None:
    config = proxy.with_route({}, APP)
    assert config["admin"] == {"listen": "unix//run/deploy-proxy/admin.sock"}
    servers = config["apps"]["http"]["servers"]
    assert servers["deploy-http"]["listen"] == [":80"] and servers["deploy-https"]["listen"] == [":443"]
    assert servers["deploy-http"]["routes"] == [
        {
            "@id": "deploy-web",
            "match": [{"host": ["web.example.com"]}],
            "terminal": True,
            "handle": [
                {
                    "handler": "reverse_proxy",
                    "upstreams": [{"dial": "{file./run/deploy-proxy/upstreams/web}"}],
                    "load_balancing": {"try_duration": "5s", "try_interval": "100ms"},
                    "stream_close_delay": "5s",
                    "transport": {"protocol": "http", "keep_alive": {"enabled": False}},
                }
            ],
        }
    ]
    assert servers["deploy-https"]["routes"] == []


def test_moving_traffic_renames_the_upstream_file_and_reads_the_configuration() -> None:
    command = proxy.point(APP, "web-v2:8080")
    assert command.argv[4:] == ("/var/lib/deploy/proxy/admin.sock", "/var/lib/deploy/proxy/upstreams", "web", "web-v2:8080")
    assert 'printf %s "$4" > "$2/.$3" && mv -f "$2/.$3" "$2/$3"' in command.argv[2]
    assert command.argv[2].endswith('curl -s -i --unix-socket "$1" http://admin/config/ 2>/dev/null || true')
    assert proxy.unpoint(APP).argv == ("rm", "-f", "/var/lib/deploy/proxy/upstreams/web")


def test_a_route_already_right_needs_no_write_and_others_keep_their_place() -> None:
    both = proxy.with_route(proxy.with_route({}, APP), API)
    assert proxy.with_route(both, APP) == both, "moving traffic alone writes no configuration"
    assert proxy.with_route(both, API) == both
    https = App.model_validate({**APP.model_dump(), "proxy": {**APP.proxy.model_dump(), "tls": "internal"}})  # type: ignore[union-attr]
    moved = proxy.with_route(both, https)
    assert moved["apps"]["http"]["servers"]["deploy-http"]["routes"] == []
    assert [r["@id"] for r in moved["apps"]["http"]["servers"]["deploy-https"]["routes"]] == ["deploy-api", "deploy-web"]
    assert moved["apps"]["tls"]["automation"]["policies"] == [
        {"@id": "deploy-api-tls", "subjects": ["api.example.com"], "issuers": [{"module": "internal"}]},
        {"@id": "deploy-web-tls", "subjects": ["web.example.com"], "issuers": [{"module": "internal"}]},
    ]
    gone = proxy.with_route(both, APP, present=False)
    assert [r["@id"] for _, r in proxy.routes_of(gone)] == ["deploy-api"]
    assert gone["apps"]["tls"]["automation"]["policies"] == both["apps"]["tls"]["automation"]["policies"]


def test_certificate_files_are_loaded_into_the_proxy() -> None:
    app = App.model_validate(
        {"name": "shop", "image": "r/shop", "proxy": {"hosts": ["shop.example"], "app_port": 80, "tls": {"cert": "c", "key": "k"}}}
    )
    config = proxy.with_route({}, app, ("CERT PEM", SecretStr("KEY PEM")))
    assert config["apps"]["tls"]["certificates"]["load_pem"] == [
        {"@id": "deploy-shop-cert", "certificate": "CERT PEM", "key": "KEY PEM", "tags": ["deploy-shop"]}
    ]
    assert config["apps"]["http"]["servers"]["deploy-https"]["routes"][0]["@id"] == "deploy-shop"
    command = proxy.write(config, '"/config/ 1"')
    assert "KEY PEM" not in command.render() and b"KEY PEM" in command.stdin


def test_two_apps_cannot_claim_one_host_name() -> None:
    other = App.model_validate({"name": "blog", "image": "r/blog", "proxy": {"hosts": ["web.example.com"], "app_port": 80}})
    config = proxy.with_route({}, APP)
    with pytest.raises(UsageError, match=r"web\.example\.com is routed to the app web on this host already"):
        proxy.with_route(config, other)


def test_parse_read() -> None:
    config = proxy.with_route({}, APP)
    output = (
        "true caddy:2.11\n---\n"
        "  sl  local_address rem_address   st tx_queue\n"
        "   0: 00000000:0050 00000000:0000 0A 00000000:00000000\n"
        "   1: 0100007F:1F90 0100007F:D2B4 01 00000000:00000000\n"
        "---\n"
        "web web-v2:8080\napi api-v7:9000\n"
        "---\n"
        f'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nEtag: "/config/ 10b8"\r\n\r\n{json.dumps(config)}\n'
    )
    found = proxy.parse_read(output)
    assert found == proxy.ProxyState(
        True, True, "caddy:2.11", frozenset({80}), '"/config/ 10b8"', config, {"web": "web-v2:8080", "api": "api-v7:9000"}
    )
    assert [found.sends_to(route) for _, route in proxy.routes_of(config)] == ["web-v2:8080"]
    assert found.sends_to({"@id": "deploy-blog"}) == "-"
    absent = proxy.parse_read("absent -\n---\n---\n---\n")
    assert (absent.running, absent.exists, absent.config, absent.etag, absent.upstreams) == (False, False, {}, "", {})


def test_parse_write() -> None:
    assert proxy.parse_write("\n200", "h1") == 200
    assert proxy.parse_write('{"error":"If-Match header did not match current config hash"}\n412', "h1") == 412
    with pytest.raises(CommandError, match=r"^h1: the proxy refused the change: loading new config: bad$"):
        proxy.parse_write('{"error":"loading new config: bad"}\n400', "h1")


def test_boot_and_drain_take_their_values_as_parameters() -> None:
    assert APP.proxy is not None
    boot = proxy.boot(APP.proxy)
    assert boot.argv[4:] == ("/var/lib/deploy/proxy", "caddy:2.11", "80", "443")
    assert "--publish \"$3:80\" --publish \"$4:443\"" in boot.argv[2]
    assert '${migrate:+--sysctl "$migrate"}' in boot.argv[2] and "net.ipv4.tcp_migrate_req=1" in boot.argv[2]
    assert proxy.drain("web-v1", 8080, 4.5).argv[4:] == ("web-v1", "8080", "5")


def test_proxy_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="an app behind the proxy publishes no host port"):
        App.model_validate({"name": "w", "image": "r/w", "container": {"ports": ["80:80"]}, "proxy": {"hosts": ["a.b"], "app_port": 80}})
    with pytest.raises(ValueError, match="tls: auto needs public DNS names"):
        App.model_validate({"name": "w", "image": "r/w", "proxy": {"hosts": ["10.0.0.1"], "app_port": 80, "tls": "auto"}})
    with pytest.raises(ValueError, match="is not a host name"):
        App.model_validate({"name": "w", "image": "r/w", "proxy": {"hosts": ["web example"], "app_port": 80}})
    assert json.dumps(App.model_validate({"name": "w", "image": "r/w", "proxy": {"hosts": ["a.b"], "app_port": 80}}).proxy.tls) == '"off"'  # type: ignore[union-attr]


def test_a_superseded_configuration_finishes_what_it_accepted() -> None:
    assert proxy.with_route({}, APP)["apps"]["http"]["grace_period"] == "30s"
    slow = App.model_validate({"name": "w", "image": "r/w", "proxy": {"hosts": ["a.b"], "app_port": 80, "drain_timeout": 90}})
    assert proxy.with_route({}, slow)["apps"]["http"]["grace_period"] == "90s"
