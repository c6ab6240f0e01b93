"""The reverse proxy on each host: the commands that run and read it, and its configuration.

One Caddy 2 container (``deploy-proxy``) per host serves every app routed through it. Apps join
its Docker network and publish no port; the proxy reaches a release by its container name.
Its admin API listens only on a unix socket in a host directory that no app container mounts,
so neither another host nor an app on the proxy's network can re-route traffic.

An app's route dials ``{file.<path>}``: the proxy reads, for each request, the file in that
directory naming the release's container. Moving traffic is an atomic rename of that file, so
it costs no reload and no connection: every request from then on goes to the new release,
requests in flight finish where they are. The configuration itself changes only when a route
is added, removed or its settings change: deploy reads it with its ETag, changes one app's
route in place, and writes it back with ``If-Match``, so two changes at once on one host
cannot overwrite each other.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from deployer.commands import RemoteCommand, script
from deployer.config import App, Proxy
from deployer.errors import CommandError, UsageError

CONTAINER = "deploy-proxy"
NETWORK = "deploy-proxy"
LABEL = "deployer.proxy"
#: host directory holding the admin socket; mode 0700, so only its owner (root) reaches it
RUN_DIR = "/var/lib/deploy/proxy"
SOCKET = f"{RUN_DIR}/admin.sock"
#: RUN_DIR as the proxy sees it, in its own file system
PROXY_RUN_DIR = "/run/deploy-proxy"
ADMIN_LISTEN = f"unix/{PROXY_RUN_DIR}/admin.sock"
#: per app, a file naming the container its route sends requests to (``container:port``)
UPSTREAMS = "upstreams"
HTTP_SERVER = "deploy-http"
HTTPS_SERVER = "deploy-https"
#: seconds the proxy gives a superseded configuration to finish what it accepted, at least
GRACE = 30
#: HTTP status of the admin API when the configuration changed since it was read
CONFLICT = 412

JSONObject = dict[str, Any]


def route_id(app: App) -> str:
    """The ``@id`` of the app's route in the proxy's configuration."""
    return f"deploy-{app.name}"


def dial(app: App) -> str:
    """The route's upstream: the proxy reads the app's upstream file for each request."""
    return f"{{file.{PROXY_RUN_DIR}/{UPSTREAMS}/{app.name}}}"


# ---------------------------------------------------------------- running the proxy


def boot(proxy: Proxy) -> RemoteCommand:
    """Create the proxy's network and start the proxy unless it runs; wait until it answers.

    The configuration survives restarts in the ``deploy-proxy-config`` volume (``--resume``);
    certificates and the internal CA in ``deploy-proxy-data``.
    """
    return script(
        "start the proxy",
        'umask 077; mkdir -p "$1" && chmod 700 "$1" || exit 1; '
        f"docker network inspect {NETWORK} >/dev/null 2>&1 || "
        f"docker network create --label {LABEL}=1 {NETWORK} >/dev/null || exit 1; "
        f"running=$(docker container inspect --format '{{{{.State.Running}}}}' {CONTAINER} 2>/dev/null); "
        'if [ "$running" = false ]; then '
        f"docker container start {CONTAINER} >/dev/null || exit 1; "
        'elif [ -z "$running" ]; then '
        # Caddy opens new listening sockets for each configuration (SO_REUSEPORT) and closes the
        # old ones; where the kernel can (Linux 5.14+), connections waiting in a closed socket's
        # accept queue move to the new one instead of being reset.
        "migrate=; [ -e /proc/sys/net/ipv4/tcp_migrate_req ] && migrate=net.ipv4.tcp_migrate_req=1; "
        f"docker run --detach --name {CONTAINER} --label {LABEL}=1 --restart unless-stopped "
        '${migrate:+--sysctl "$migrate"} '
        f'--network {NETWORK} --publish "$3:80" --publish "$4:443" '
        f'--volume "$1:{PROXY_RUN_DIR}" --volume deploy-proxy-data:/data --volume deploy-proxy-config:/config '
        "--env XDG_DATA_HOME=/data --env XDG_CONFIG_HOME=/config "
        f"--env CADDY_ADMIN={ADMIN_LISTEN} "
        '--entrypoint caddy "$2" run --resume >/dev/null || exit 1; fi; '
        'i=0; until curl -sf --unix-socket "$1/admin.sock" http://admin/config/ >/dev/null; do '
        'i=$((i+1)); if [ $i -ge 100 ]; then echo "the proxy does not answer on its admin socket" >&2; '
        f"docker container logs --tail 3 {CONTAINER} >&2; exit 1; fi; sleep 0.1; done",
        RUN_DIR,
        proxy.image,
        str(proxy.http_port),
        str(proxy.https_port),
    )


def remove() -> RemoteCommand:
    """Stop and remove the proxy container; its configuration and certificates stay in volumes."""
    return RemoteCommand(("docker", "container", "rm", "--force", CONTAINER), purpose="remove the proxy")


def connect(container: str) -> RemoteCommand:
    """Put a release's container on the proxy's network (already there: nothing to do)."""
    return script(
        "join the proxy network",
        f"docker container inspect --format '{{{{json .NetworkSettings.Networks}}}}' \"$1\" | grep -q '\"{NETWORK}\"' "
        f'|| docker network connect {NETWORK} "$1"',
        container,
    )


# ---------------------------------------------------------------- what the host says about it


@dataclass(frozen=True)
class ProxyState:
    """The proxy container, the TCP ports the host listens on, and the proxy's configuration."""

    running: bool
    exists: bool
    image: str
    listening: frozenset[int]
    etag: str
    config: JSONObject
    #: per app name, the ``container:port`` its upstream file names
    upstreams: Mapping[str, str] = field(default_factory=dict)

    def sends_to(self, route: JSONObject) -> str:
        """Where one of the proxy's routes sends requests: what its app's upstream file names."""
        return self.upstreams.get(str(route.get("@id", "")).removeprefix("deploy-"), "-")


#: prints the admin API's answer to reading the configuration, headers (the ETag) included
_PRINT_CONFIG = 'curl -s -i --unix-socket "$1" http://admin/config/ 2>/dev/null || true'


def read() -> RemoteCommand:
    """The proxy container's state and image, the host's listening ports, every app's upstream,
    the configuration."""
    return script(
        "read the proxy",
        f"docker container inspect --format '{{{{.State.Running}}}} {{{{.Config.Image}}}}' {CONTAINER} "
        '2>/dev/null || echo "absent -"; echo ---; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo ---; '
        'for f in "$2"/*; do [ -f "$f" ] && printf \'%s %s\\n\' "${f##*/}" "$(cat "$f")"; done; echo ---; '
        + _PRINT_CONFIG,
        SOCKET,
        f"{RUN_DIR}/{UPSTREAMS}",
    )


def parse_read(output: str) -> ProxyState:
    """Parse the output of :func:`read`."""
    container, _, rest = output.partition("---\n")
    sockets, _, rest = rest.partition("---\n")
    files, _, answer = rest.partition("---\n")
    running, _, image = container.strip().partition(" ")
    etag, config = parse_config(answer)
    upstreams = dict(line.split(" ", 1) for line in files.splitlines() if " " in line)
    return ProxyState(
        running=running == "true",
        exists=running in ("true", "false"),
        image=image if running != "absent" else "",
        listening=frozenset(_listening(sockets)),
        etag=etag,
        config=config,
        upstreams=upstreams,
    )


def parse_config(answer: str) -> tuple[str, JSONObject]:
    """The ETag and the configuration from the admin API's answer (``curl -i``); empty when
    the proxy did not answer."""
    headers, _, body = answer.replace("\r\n", "\n").partition("\n\n")
    etag = next(
        (line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("etag:")),
        "",
    )
    try:
        config = json.loads(body) if body.strip() else None
    except json.JSONDecodeError:
        config = None
    return etag, config if isinstance(config, dict) else {}


def _listening(table: str) -> Iterator[int]:
    """Ports in LISTEN state (``0A``) in /proc/net/tcp lines: ``sl local_address rem_address st ...``."""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:
            try:
                yield int(fields[1].rsplit(":", 1)[1], 16)
            except ValueError:
                continue


# ---------------------------------------------------------------- changing the configuration


def write(config: JSONObject, etag: str) -> RemoteCommand:
    """Replace the configuration, only if it is still the one read (*etag*); prints the HTTP status last.

    The configuration travels on stdin: it may hold private keys of certificates.
    """
    return script(
        "change the proxy's routes",
        'curl -s --unix-socket "$1" -X POST -H "Content-Type: application/json" -H "If-Match: $2" '
        '--data-binary @- -w "\\n%{http_code}" http://admin/config/',
        SOCKET,
        etag,
        stdin=json.dumps(config, sort_keys=True).encode(),
    )


def parse_write(output: str, host: str) -> int:
    """The HTTP status :func:`write` printed last on *host*; a CommandError with the proxy's own
    words unless 200 or 412."""
    body, _, code = output.strip().rpartition("\n")
    status = int(code) if code.isdigit() else 0
    if status not in (200, CONFLICT):
        try:
            reason = str(json.loads(body).get("error", body))
        except (json.JSONDecodeError, AttributeError):
            reason = body.strip() or f"HTTP {status}"
        raise CommandError(f"{host}: the proxy refused the change: {reason[:300]}")
    return status


def upstream(app: App, container: str) -> str:
    """Where the proxy sends the app's requests: the release's container on the proxy network."""
    assert app.proxy is not None
    return f"{container}:{app.proxy.app_port}"


def point(app: App, target: str) -> RemoteCommand:
    """Send the app's requests to *target* (``container:port``) by renaming its upstream file
    into place (atomic: every request reads the old name or the new one), then print the
    configuration (as :func:`parse_config` reads it) to check the route that reads the file."""
    return script(
        "move the app's traffic",
        'umask 077; mkdir -p "$2" && printf %s "$4" > "$2/.$3" && mv -f "$2/.$3" "$2/$3" || exit 1; '
        + _PRINT_CONFIG,
        SOCKET,
        f"{RUN_DIR}/{UPSTREAMS}",
        app.name,
        target,
    )


def unpoint(app: App) -> RemoteCommand:
    """Remove the app's upstream file (after its route is gone)."""
    return RemoteCommand(("rm", "-f", f"{RUN_DIR}/{UPSTREAMS}/{app.name}"), purpose="forget the app's upstream")


def routes_of(config: JSONObject) -> Iterator[tuple[str, JSONObject]]:
    """Every route of the proxy's servers, with the server it is in."""
    servers = config.get("apps", {}).get("http", {}).get("servers", {})
    for name, server in servers.items():
        for route in server.get("routes", []) or []:
            if isinstance(route, dict):
                yield name, route


def hosts_of(route: JSONObject) -> set[str]:
    """The host names a route matches."""
    return {host for match in route.get("match", []) or [] for host in match.get("host", []) or []}


def check_hosts(config: JSONObject, app: App) -> None:
    """Refuse a host name another app's route already claims on this proxy."""
    assert app.proxy is not None
    mine = set(app.proxy.hosts)
    for _, route in routes_of(config):
        taken = sorted(mine & hosts_of(route))
        if route.get("@id") != route_id(app) and taken:
            other = str(route.get("@id", "another route")).removeprefix("deploy-")
            raise UsageError(
                f"proxy.hosts: {taken[0]} is routed to the app {other} on this host already; "
                "two apps cannot claim one host name, so nothing was changed",
                hint="give each app its own host names",
            )


def _put(items: list[JSONObject], ident: str, item: JSONObject | None) -> list[JSONObject]:
    """*items* with the one whose ``@id`` is *ident* replaced in place by *item* (appended when
    absent; removed when *item* is None)."""
    found = [i for i, existing in enumerate(items) if existing.get("@id") == ident]
    kept = [existing for existing in items if existing.get("@id") != ident]
    if item is None:
        return kept
    kept.insert(found[0] if found else len(kept), item)
    return kept


def with_route(
    config: JSONObject, app: App, certificate: tuple[str, SecretStr] | None = None, *, present: bool = True
) -> JSONObject:
    """*config* with the app's route (reading its upstream file) and TLS settings as `proxy`
    says, each in its place; without them when *present* is False. Applying it to its own
    result changes nothing, so a configuration already right needs no write."""
    proxy = app.proxy
    assert proxy is not None
    check_hosts(config, app)
    result = copy.deepcopy(config) or {}
    result.setdefault("admin", {"listen": ADMIN_LISTEN})
    http = result.setdefault("apps", {}).setdefault("http", {})
    grace = _seconds(http.get("grace_period"))
    # A configuration superseded by a route change finishes the requests and the connections
    # it accepted; on a loaded host a connection can wait seconds before its request is read.
    http["grace_period"] = f"{max(grace, GRACE, math.ceil(proxy.drain_timeout))}s"
    servers = http.setdefault("servers", {})
    servers.setdefault(HTTP_SERVER, {"listen": [":80"], "routes": [], "automatic_https": {"disable": True}})
    servers.setdefault(
        HTTPS_SERVER, {"listen": [":443"], "routes": [], "automatic_https": {"disable_redirects": True}}
    )
    ident = route_id(app)
    home = HTTP_SERVER if proxy.tls == "off" else HTTPS_SERVER
    route: JSONObject = {
        "@id": ident,
        "match": [{"host": list(proxy.hosts)}],
        "handle": [
            {
                "handler": "reverse_proxy",
                "upstreams": [{"dial": dial(app)}],
                # A request that found the release just stopped reads the upstream file again.
                "load_balancing": {"try_duration": "5s", "try_interval": "100ms"},
                # When a change to the configuration (another app's route) reloads it, open
                # WebSockets and other streams get this long before they are closed.
                "stream_close_delay": f"{math.ceil(proxy.drain_timeout)}s",
                # One connection per request: a release without connections has no request in flight.
                "transport": {"protocol": "http", "keep_alive": {"enabled": False}},
            }
        ],
        "terminal": True,
    }
    for name, server in servers.items():
        server["routes"] = _put(server.get("routes", []) or [], ident, route if present and name == home else None)
    tls = result["apps"].setdefault("tls", {})
    automation = tls.setdefault("automation", {})
    policy = None
    if present and proxy.tls == "internal":
        policy = {"@id": f"{ident}-tls", "subjects": list(proxy.hosts), "issuers": [{"module": "internal"}]}
    automation["policies"] = _put(automation.get("policies", []) or [], f"{ident}-tls", policy)
    loaded = tls.setdefault("certificates", {})
    pem = None
    if present and certificate is not None:
        cert, key = certificate
        pem = {"@id": f"{ident}-cert", "certificate": cert, "key": key.get_secret_value(), "tags": [ident]}
    loaded["load_pem"] = _put(loaded.get("load_pem", []) or [], f"{ident}-cert", pem)
    return result


def _seconds(value: object) -> int:
    if isinstance(value, str) and value.endswith("s") and value[:-1].isdigit():
        return int(value[:-1])
    return 0


# ---------------------------------------------------------------- draining a release


def drain(container: str, port: int, timeout: float) -> RemoteCommand:
    """Wait until no connection to *container*'s *port* is open, at most *timeout* seconds.

    The proxy opens one connection per request, so no open connection means no request in
    flight; open WebSockets keep the wait going until the deadline.
    """
    return script(
        "drain the old release",
        "pid=$(docker container inspect --format '{{.State.Pid}}' \"$1\") || exit 1; "
        '[ "$pid" -gt 0 ] 2>/dev/null || exit 0; '
        'port=$(printf "%04X" "$2"); end=$(( $(date +%s) + $3 )); '
        'while awk -v p=":$port" \'$4 == "01" && substr($2, length($2) - 4) == p { n++ } END { exit n == 0 }\' '
        '"/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null; do '
        '[ "$(date +%s)" -lt "$end" ] || exit 0; sleep 0.1; done',
        container,
        str(port),
        str(math.ceil(timeout)),
        waits=math.ceil(timeout),
    )
