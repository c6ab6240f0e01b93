"""A scripted stand-in for a Swarm manager, to test the Swarm decisions without a cluster.

It answers the Swarm commands of :mod:`deployer.commands` from a tiny model of one service,
its tasks and the cluster's secrets; lock, history and the rest are the plain host's
(:class:`FakeHost`). An update moves one step each time the service is read: first
"updating", then done, either on the new digest when it is healthy, or rolled back by
"Swarm" when it is not. The end-to-end tests run the same decisions on a real Swarm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from deployer.commands import RemoteCommand
from deployer.transport import CommandResult, LineReader

from .fakehost import FakeHost

NODES = ("host1", "host2", "host3")
KEY = "5e" * 32  # the cluster's key for naming secret versions
_SWITCHES = {"--detach", "--no-resolve-image", "--with-registry-auth"}
_FINISHED = {"updating": "completed", "rollback_started": "rollback_completed"}


@dataclass
class FakeService:
    image: str
    labels: dict[str, str]
    replicas: int | None
    env: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)
    mounts: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # target -> name

    @property
    def digest(self) -> str:
        return self.image.rpartition("@")[2]


@dataclass
class FakeManager(FakeHost):
    healthy_digests: set[str] = field(default_factory=set)
    stuck: bool = False  # updates never finish
    service: FakeService | None = None
    previous: FakeService | None = None
    update: str = ""
    running: str = ""  # the digest the tasks run
    pending: str = ""  # the digest an update moves to
    started: bool = False  # the update in progress was seen under way once
    failed_tasks: list[dict[str, str]] = field(default_factory=list)
    secrets: dict[str, bytes] = field(default_factory=dict)

    def run(
        self, command: RemoteCommand, timeout: float | None = None, *, on_line: LineReader | None = None
    ) -> CommandResult:
        argv = command.argv
        if "service" in argv:
            self.log.append(command)
            return self._service(command, argv[argv.index("service") :])
        if command.purpose == "read the Swarm service":
            self.log.append(command)
            self._step()
            return CommandResult(0, self._read(), "")
        if command.purpose == "read the Swarm secret key":
            self.log.append(command)
            return CommandResult(0, KEY, "")
        if command.purpose == "create a Swarm secret":
            self.log.append(command)
            self.secrets.setdefault(argv[4], command.stdin)
            return CommandResult(0, "", "")
        return super().run(command, timeout, on_line=on_line)

    # ------------------------------------------------------------ commands

    def _service(self, command: RemoteCommand, argv: tuple[str, ...]) -> CommandResult:
        verb, flags = argv[1], _flags(argv[2:])
        if verb == "create":
            self.service = FakeService(flags["image"][0], _pairs(flags["--label"]), _replicas(flags))
            self._apply(self.service, flags)
            self.update, self.pending = "", self.service.digest
        elif verb == "update":
            assert self.service is not None
            self.previous = self.service
            self.service = _copy(self.service)
            self.service.image = flags["--image"][0]
            self.service.labels.update(_pairs(flags["--label-add"]))
            self._apply(self.service, flags)
            self.update, self.pending = "updating", self.service.digest
        elif verb == "rollback":
            assert self.service is not None and self.previous is not None
            self.service, self.previous = self.previous, self.service
            self.update, self.pending = "rollback_started", self.service.digest
        elif verb == "rm":
            self.service, self.running, self.pending = None, "", ""
        return CommandResult(0, "", "")

    def _apply(self, service: FakeService, flags: dict[str, list[str]]) -> None:
        for key in flags.get("--env-rm", []):
            service.env.pop(key, None)
        for pair in flags.get("--env", []) + flags.get("--env-add", []):
            key, _, value = pair.partition("=")
            service.env[key] = value
        for spec in flags.get("--publish-rm", []):
            service.ports.remove(spec)
        service.ports += flags.get("--publish", []) + flags.get("--publish-add", [])
        for target in flags.get("--mount-rm", []):
            service.mounts.pop(target)
        for spec in flags.get("--mount", []) + flags.get("--mount-add", []):
            service.mounts[_pairs(spec.split(","))["target"]] = spec
        for name in flags.get("--secret-rm", []):
            service.secrets = {t: n for t, n in service.secrets.items() if n != name}
        for spec in flags.get("--secret", []) + flags.get("--secret-add", []):
            ref = _pairs(spec.split(","))
            assert ref["source"] in self.secrets, f"no secret {ref['source']}"
            service.secrets[ref["target"]] = ref["source"]
        if "--replicas" in flags:
            service.replicas = int(flags["--replicas"][0])

    # ------------------------------------------------------------ the cluster moving on

    def _step(self) -> None:
        """One step of the update in progress: show it under way once, then finish or roll it back."""
        if self.service is None or (self.stuck and self.update == "updating"):
            return
        if self.update in ("updating", "rollback_started") and not self.started:
            self.started = True
            return
        self.started = False
        if self.pending in self.healthy_digests or self.update == "rollback_started":
            self.running = self.pending
            self.update = _FINISHED.get(self.update, self.update)
        elif self.pending != self.running:
            self.failed_tasks.append({"node": NODES[0], "digest": self.pending})
            if self.update == "updating":  # Swarm rolls back by itself
                self.service, self.previous = self.previous, self.service
                self.update, self.pending = "rollback_completed", self.running
            else:  # a new service: Swarm only restarts the task
                self.running = self.pending

    def _read(self) -> str:
        nodes = [json.dumps({"Hostname": n, "Status": "Ready", "Availability": "Active"}) for n in NODES]
        if self.service is None:
            return "\n".join([*nodes, "---"]) + "\n"
        service = self.service
        image = service.image.rpartition("@")[0]
        current = self.running or "sha256:none"
        state = "Running 5 seconds ago" if current in self.healthy_digests else "Starting 1 second ago"
        tasks = [
            {"Node": n, "Image": f"{image}@{current}", "DesiredState": "Running", "CurrentState": state, "Error": ""}
            for n in NODES[: service.replicas or len(NODES)]
        ] + [
            {"Node": t["node"], "Image": f"{image}@{t['digest']}", "DesiredState": "Shutdown",
             "CurrentState": "Failed 2 seconds ago", "Error": '"task: non-zero exit (1): dockerexec: unhealthy container"'}
            for t in self.failed_tasks
        ]  # fmt: skip
        return "\n".join([*nodes, "---", json.dumps(self._inspect(service)), "---", *map(json.dumps, tasks)]) + "\n"

    def _inspect(self, service: FakeService) -> dict[str, Any]:
        mode = {"Global": {}} if service.replicas is None else {"Replicated": {"Replicas": service.replicas}}
        ports = [_port(spec) for spec in service.ports]
        mounts = [_mount(spec) for spec in service.mounts.values()]
        secrets = [{"File": {"Name": t}, "SecretName": n} for t, n in service.secrets.items()]
        container = {"Image": service.image, "Env": [f"{k}={v}" for k, v in service.env.items()]}
        container.update(Mounts=mounts, Secrets=secrets)
        status = {"State": self.update, "Message": f"update {self.update}"} if self.update else None
        spec = {"Labels": service.labels, "TaskTemplate": {"ContainerSpec": container}, "Mode": mode}
        spec["EndpointSpec"] = {"Ports": ports}
        return {"Spec": spec, "UpdateStatus": status}

    def serving(self) -> str | None:
        """The release label of the service, when its tasks run it."""
        if self.service is None or self.running != self.service.digest:
            return None
        return self.service.labels["deployer.release"]


def _flags(words: tuple[str, ...]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word in _SWITCHES or word.startswith("--init="):
            index += 1
        elif word.startswith("--"):
            flags.setdefault(word, []).append(words[index + 1])
            index += 2
        else:
            flags.setdefault("image", []).append(word)
            index += 1
    return flags


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items)


def _replicas(flags: dict[str, list[str]]) -> int | None:
    return None if flags.get("--mode") == ["global"] else int(flags["--replicas"][0])


def _copy(service: FakeService) -> FakeService:
    return FakeService(
        service.image, dict(service.labels), service.replicas, dict(service.env), list(service.ports),
        dict(service.mounts), dict(service.secrets),
    )  # fmt: skip


def _port(spec: str) -> dict[str, Any]:
    parts = _pairs(spec.split(","))
    port: dict[str, Any] = {"Protocol": parts["protocol"], "TargetPort": int(parts["target"]), "PublishMode": "host"}
    if "published" in parts:
        port["PublishedPort"] = int(parts["published"])
    return port


def _mount(spec: str) -> dict[str, Any]:
    parts = _pairs(spec.split(","))
    mount: dict[str, Any] = {"Type": parts["type"], "Source": parts["source"], "Target": parts["target"]}
    if "readonly" in parts:
        mount["ReadOnly"] = True
    return mount
