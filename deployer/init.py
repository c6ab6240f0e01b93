"""`deploy init`: a first, commented inventory.yaml from what can be inferred, asking nothing.

The app name is the current directory's name, made valid (lower-case; other characters become
``-``). The image repository comes from the git remote ``origin`` when it is on a forge with a
registry of its own; otherwise it is a placeholder to change:

    git@github.com:Acme/Web.git               ghcr.io/acme/web
    https://gitlab.com/acme/tools/web.git     registry.gitlab.com/acme/tools/web
    any other remote, or none                 registry.example.com/<name>

The file is the template below, which is also where ``inventory.example.yaml`` comes from:
rendered for the example's app it gives that file byte for byte (a test checks it), so the
comments a new inventory carries are the ones the example documents.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from deployer import config, source
from deployer.config import Inventory
from deployer.errors import ConfigError, UsageError

#: the image repository used when the remote says nothing about a registry
PLACEHOLDER_REGISTRY = "registry.example.com"
#: registries of the forges whose remotes map to an image repository
FORGE_REGISTRIES = {"github.com": "ghcr.io", "gitlab.com": "registry.gitlab.com"}
FALLBACK_NAME = "app"
COMMENT_COLUMN = 46

_INVALID_NAME_CHARS = re.compile(r"[^a-z0-9_.-]+")
_IMAGE_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(.*)$")
_COMMENTED = re.compile(r"^(\s*[^\s#].*?)\s+(#.*)$")

_TEMPLATE = """\
# inventory.yaml: the one file that describes an app and the servers it runs on.
# `deploy` reads ./inventory.yaml, or the file named by -i PATH or $DEPLOY_INVENTORY.
# Every key is shown here; docs/inventory.md is the full reference.

app:
  name: @NAME@ # names containers, history, lock (lower-case, digits, . _ -)
  image: @IMAGE@ # repository, no tag: the tag is the commit (first 12 hex digits)
  build:
    context: . # relative to this file
    dockerfile: Dockerfile # relative to the context
    args: {} # build arguments; they stay in the image history, so no secrets
  registry: # or false: no registry, images go over SSH (docs/no-registry.md)
    server: @SERVER@
    username: deploy # omit username and password_env to use the Docker credential store
    password_env: DEPLOY_REGISTRY_PASSWORD # read from the environment; never stored by deploy
  container:
    ports: [] # HOST:CONTAINER, as for docker run -p ("80:8080"); none behind the proxy
    env: {LOG_LEVEL: info} # plain settings, visible in `docker inspect`
    secrets: [DATABASE_URL] # values read from the local environment at rollout, sent over stdin
    volumes: ["@VOLUME@-data:/var/data"] # named volumes and bind mounts; deploy never removes a volume
    restart: unless-stopped # restart policy of the running release
    stop_timeout: 10 # seconds between SIGTERM and SIGKILL when a release is stopped
    init: false # true runs an init as PID 1 (docker run --init), so signals reach the app
  healthcheck:
    path: /health # must answer 2xx; omit to use the image's HEALTHCHECK instead
    port: 8080 # container port the path is served on
    timeout: 30 # seconds a new release has to become healthy
    interval: 0.2 # seconds between checks
    watch: 0 # seconds a healthy release must then keep running without restarts
  rollout:
    batch_size: 1 # hosts switched at once: a count or a percentage like "25%"
    max_failures: 0 # failed hosts tolerated; beyond that every switched host goes back
  keep_releases: 5 # stopped releases kept on each host for rollback
  proxy: # omit for non-HTTP services: they switch stop-first on their own ports
    hosts: [example.com, www.example.com] # host names routed to this app by the proxy on each host
    app_port: 8080 # container port the app serves HTTP on (no host port is published)
    tls: {cert: certs/example.com.pem, key: certs/example.com.key}   # or off, internal (own CA), auto (ACME)
    drain_timeout: 30 # seconds in-flight requests and WebSockets keep the old release
    image: caddy:2.11 # the proxy (Caddy 2), shared by every app on the host
    http_port: 80 # host ports the proxy listens on
    https_port: 443
  roles: # omit for an app that is one role, web, on every host (docs/roles.md)
    web: # keeps the container names and history of an app without roles
      hosts: [prod, staging] # groups and hosts it runs on (plain hosts only, no Swarm cluster)
      proxy: true # behind app.proxy (one role at most; web's default when it is set)
    worker: # the same image and release, its own command
      hosts: [prod, workers]
      cmd: [celery, worker] # replaces the image's CMD (its ENTRYPOINT stays)
      env: {QUEUE: default} # merged over app.container.env
      ports: [] # published ports; web's default: app.container.ports, others: none
      healthcheck: # omitted: only web and the proxy's role use app.healthcheck;
        path: /ping #   any other role must keep running without a restart
        port: 9000
        timeout: 60
        interval: 1
        watch: 10
  hooks: # commands around a rollout (docs/day-two.md); a command is an argv list or an sh -c string
    before_switch: [] # run once per rollout before any switch, in the new release: e.g. [[python, manage.py, migrate]]
    before_switch_timeout: 600 # seconds each before_switch command may run; a failure stops the rollout
    after: [] # run here after rollout and rollback, given DEPLOY_* variables (no secrets): e.g. ['notify-send "$DEPLOY_OUTCOME"']
    after_timeout: 60 # seconds each after command may run; a failure only warns

ssh: # unset keys come from ~/.ssh/config, then SSH's defaults
  user: deploy
  port: 22
  identity_file: ~/.ssh/id_ed25519 # keys in ssh-agent are tried too
  known_hosts: ~/.ssh/known_hosts # read besides ~/.ssh/known_hosts; unknown host keys are refused
  config_file: ~/.ssh/config # aliases, HostName, User, Port, IdentityFile, ProxyJump
  connect_timeout: 10 # seconds to connect and log in
  command_timeout: 30 # seconds one command on a host may run (docker stop: plus stop_timeout)
  pull_timeout: 600 # seconds one image pull on a host may run
  parallel: 16 # hosts worked on at once

hosts: # groups of hosts; `--hosts` takes a group, `all`, or a list
  prod:
    - web1.example.com # a name, an ~/.ssh/config alias, or an address
    - {address: 10.0.0.7, port: 2222, user: admin} # per-host overrides
  staging:
    - staging1.example.com
  workers:
    - worker1.example.com
  cluster: # a Docker Swarm cluster instead of a list of hosts (docs/swarm.md);
                                              # it runs the app as one service: refused while app.roles is set
    swarm:
      manager: {address: mgr1.example.com, port: 22, user: deploy} # or just a name, like a host
      replicas: global # one task on every node, or a count like 6
      update: {parallelism: 2, delay: 5, monitor: 10, order: stop-first} # Swarm's rolling update
      timeout: 300 # seconds to converge before deploy rolls the service back

accessories: # containers beside the app, by name (docs/accessories.md); rollouts never touch them
  exporter: # the app reaches it as http://exporter:9100 on the app's network
    image: prom/node-exporter:v1.8.2 # pinned by tag or digest; images in app.registry.server use its login
    hosts: [prod] # groups or hosts it runs on
    cmd: ["--collector.textfile.directory=/data"] # arguments after the image; omit for the image's own
    env: {TZ: UTC} # plain settings
    secrets: [EXPORTER_TOKEN] # values read from the local environment at boot and reboot, sent over stdin
    volumes: ["exporter-data:/data"] # deploy never removes a volume, not even with the accessory
    ports: ["127.0.0.1:9100:9100"] # host ports the app, the proxy and other accessories do not publish
    restart: unless-stopped
    stop_timeout: 10
    init: false
    healthcheck: {path: /metrics, port: 9100, timeout: 30, interval: 0.2, watch: 0} # omit: HEALTHCHECK, else keeps running
"""


@dataclass(frozen=True)
class Choice:
    """The app name and image repository `deploy init` writes, and where each came from."""

    name: str
    name_from: str
    image: str
    image_from: str


def app_name(directory: str) -> str:
    """*directory*'s name as a valid app name: ``My Web_App!`` gives ``my-web_app``."""
    ascii_name = unicodedata.normalize("NFKD", directory).encode("ascii", "ignore").decode().lower()
    parts = (part for part in _INVALID_NAME_CHARS.split(ascii_name) if part)
    return "-".join(parts).lstrip("._-") or FALLBACK_NAME


def image_from_remote(url: str) -> str | None:
    """The image repository of a GitHub or GitLab remote *url*; None for any other remote."""
    if "://" in url:
        parts = urlsplit(url)
        host, path = (parts.hostname or ""), parts.path
    else:
        scp = _SCP_LIKE.match(url)
        if scp is None:
            return None
        host, path = scp.group(1).lower(), scp.group(2)
    registry = FORGE_REGISTRIES.get(host)
    components = [part.lower() for part in path.strip("/").removesuffix(".git").split("/") if part]
    if registry is None or len(components) < 2:
        return None
    if not all(_IMAGE_COMPONENT.match(component) for component in components):
        return None
    return "/".join([registry, *components])


def choose(directory: Path, *, name: str | None, image: str | None) -> Choice:
    """The name and image for an app in *directory*: the flags, else what can be inferred."""
    if name is not None and app_name(name) != name:
        raise UsageError(
            f"--name {name!r} must be lower-case letters, digits, '.', '_' or '-'",
            hint=f"for example --name {app_name(name)}",
        )
    chosen_name = name or app_name(directory.name)
    name_from = "from --name" if name else f"from the directory name {directory.name!r}"
    if image:
        return Choice(chosen_name, name_from, image, "from --image")
    try:
        remote = source.origin_url(directory)
    except UsageError:  # git is not installed
        remote = None
    inferred = image_from_remote(remote) if remote else None
    if inferred:
        return Choice(chosen_name, name_from, inferred, f"from the git remote origin {remote}")
    return Choice(
        chosen_name,
        name_from,
        f"{PLACEHOLDER_REGISTRY}/{chosen_name}",
        "a placeholder: " + ("origin is not on GitHub or GitLab" if remote else "no git remote origin"),
    )


def render(name: str, image: str) -> str:
    """The commented inventory for app *name* built into *image*, every key shown."""
    text = (
        _TEMPLATE.replace("@NAME@", _scalar(name))
        .replace("@IMAGE@", _scalar(image))
        .replace("@SERVER@", _scalar(config.registry_server(image)))
        .replace("@VOLUME@", name)
    )
    return "".join(_align(line) for line in text.splitlines(keepends=True))


def validate(text: str, path: Path) -> Inventory:
    """The inventory *text* describes, checked before it is written to *path*."""
    try:
        return config.parse(text, path)
    except ConfigError as exc:  # only --image can make it invalid: inferred values are valid
        raise UsageError(
            f"the inventory would not be valid: {exc.message}",
            hint="--image takes a repository without a tag, like ghcr.io/acme/web",
        ) from exc


def next_steps(path: Path, choice: Choice) -> list[str]:
    """What to do after `deploy init`, in order."""
    server = config.registry_server(choice.image)
    steps = [f"list your servers under hosts: in {path}, and how to log in to them under ssh:"]
    if choice.image.startswith(f"{PLACEHOLDER_REGISTRY}/"):
        steps.append(f"set app.image to your registry's repository (now {choice.image})")
    steps += [
        f"registry login: export DEPLOY_REGISTRY_PASSWORD, or drop app.registry and run docker login {server}",
        "check app.proxy (host names, app port, TLS), app.container and app.healthcheck against your app",
        "deploy build, deploy push, then deploy rollout --hosts staging",
    ]
    return [f"{number}. {step}" for number, step in enumerate(steps, 1)]


def write(path: Path, text: str) -> None:
    """Create *path* with *text*; refuse if it exists, so an inventory is never overwritten."""
    try:
        with path.open("x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError as exc:
        raise UsageError(
            f"{path} already exists; deploy init never overwrites an inventory",
            hint="edit it, or move it away and run deploy init again",
        ) from exc
    except FileNotFoundError as exc:
        raise UsageError(f"{path.parent}: no such directory") from exc
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc


def _scalar(value: str) -> str:
    """*value* as a YAML scalar: plain when YAML reads it back as that string, else quoted."""
    try:
        plain = yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain = False
    return value if plain else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _align(line: str) -> str:
    """Start a line's trailing comment at COMMENT_COLUMN, or three spaces after a longer value."""
    found = _COMMENTED.match(line.rstrip("\n"))
    if found is None:
        return line
    code, comment = found.groups()
    return f"{code.ljust(max(COMMENT_COLUMN, len(code) + 3))}{comment}\n"
