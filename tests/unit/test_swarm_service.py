"""What a Swarm manager runs for the app's service, compared exactly; secrets never in argv."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from deployer.commands import Login
from deployer.config import App, Swarm
from deployer.targets import swarm_service as commands

from .test_commands import APP, REF

# ---------------------------------------------------------------- swarm

SWARM = Swarm.model_validate(
    {"manager": "mgr1", "replicas": 3, "update": {"parallelism": 2, "delay": 5, "monitor": 10}}
)
SETTINGS = (
    "--restart-condition any --restart-max-attempts 0 --stop-grace-period 5s --init=false "
    "--update-failure-action rollback --rollback-failure-action continue "
    "--update-parallelism 2 --update-delay 5s --update-monitor 10s --update-order stop-first "
    "--rollback-parallelism 2 --rollback-delay 5s --rollback-monitor 10s --rollback-order stop-first"
)


def test_service_create_names_the_image_by_digest_and_publishes_in_host_mode() -> None:
    command = commands.create_service(
        APP, SWARM, "v1", REF, "sha256:abc", {"DATABASE_URL": "web-DATABASE_URL-0123abcd"},
        login=None,
    )  # fmt: skip
    assert command.render() == (
        "docker service create --detach --no-resolve-image --with-registry-auth --name web "
        "--label deployer.app=web --label deployer.release=v1 --label deployer.digest=sha256:abc "
        f"--replicas 3 {SETTINGS} "
        "--publish mode=host,target=8080,published=80,protocol=tcp "
        "--mount type=volume,source=web-data,target=/var/data --env LOG_LEVEL=info "
        "--secret source=web-DATABASE_URL-0123abcd,target=DATABASE_URL "
        "reg.example:5000/acme/web@sha256:abc"
    )
    assert command.stdin == b""


def test_service_create_logs_in_to_a_throwaway_config_and_forwards_the_login() -> None:
    command = commands.create_service(
        APP, SWARM, "v1", REF, "sha256:abc", {},
        login=Login("deploy", "reg.example:5000", SecretStr("pw-123")),
    )  # fmt: skip
    assert "pw-123" not in command.render()
    assert command.stdin == Login("deploy", "reg.example:5000", SecretStr("pw-123")).docker_config()
    assert command.argv[:2] == ("sh", "-c") and command.purpose == "docker service create"
    assert command.argv[2] == (
        'd=; trap \'[ -z "$d" ] || rm -rf "$d"\' EXIT; '
        'login() { d=$(mktemp -d) && (umask 077 && cat > "$d/config.json"); }; '
        'dk() { if [ -n "$d" ]; then docker --config "$d" "$@"; else docker "$@"; fi; }; '
        'login || exit 1; dk "$@"'
    )
    assert command.argv[3:8] == ("sh", "service", "create", "--detach", "--no-resolve-image")
    assert command.argv[-1] == REF


def test_global_service_and_restart_policies() -> None:
    app = App.model_validate({"name": "web", "image": "r/web", "container": {"restart": "on-failure:3", "init": True}})
    swarm = Swarm.model_validate({"manager": "mgr1"})
    argv = commands.create_service(app, swarm, "v1", "r/web@sha256:1", "sha256:1", {},
                                   login=None).argv  # fmt: skip
    assert argv[argv.index("--mode") : argv.index("--mode") + 2] == ("--mode", "global")
    assert "--replicas" not in argv and "--init=true" in argv
    assert argv[argv.index("--restart-condition") : argv.index("--restart-condition") + 4] == (
        "--restart-condition", "on-failure", "--restart-max-attempts", "3",
    )  # fmt: skip


def test_service_update_changes_image_labels_settings_and_only_what_differs() -> None:
    changes = commands.ServiceChanges(
        env_rm=("OLD",), env_add=("LOG_LEVEL=info",), publish_rm=("mode=host,target=81,published=81,protocol=tcp",),
        mount_rm=("/old",), secret_rm=("web-DATABASE_URL-11111111",),
        secret_add=("source=web-DATABASE_URL-22222222,target=DATABASE_URL",),
    )  # fmt: skip
    command = commands.update_service(APP, SWARM, "v2", REF, "sha256:abc", changes,
                                      login=None)  # fmt: skip
    assert command.render() == (
        "docker service update --detach --no-resolve-image --with-registry-auth "
        "--image reg.example:5000/acme/web@sha256:abc "
        "--label-add deployer.app=web --label-add deployer.release=v2 --label-add deployer.digest=sha256:abc "
        f"--replicas 3 {SETTINGS} "
        "--env-rm OLD --env-add LOG_LEVEL=info --publish-rm mode=host,target=81,published=81,protocol=tcp "
        "--mount-rm /old --secret-rm web-DATABASE_URL-11111111 "
        "--secret-add source=web-DATABASE_URL-22222222,target=DATABASE_URL web"
    )


def test_revert_moves_image_labels_and_secrets_only_without_the_registry() -> None:
    changes = commands.ServiceChanges(secret_rm=("web-A-1",), secret_add=("source=web-A-2,target=A",))
    assert commands.revert_service(APP, "v1", "r/web@sha256:1", "sha256:1", changes).render() == (
        "docker service update --detach --no-resolve-image --image r/web@sha256:1 "
        "--label-add deployer.app=web --label-add deployer.release=v1 --label-add deployer.digest=sha256:1 "
        "--secret-rm web-A-1 --secret-add source=web-A-2,target=A web"
    )


def test_swarm_secret_is_versioned_by_a_keyed_hash_of_its_value_and_created_from_stdin() -> None:
    name = commands.secret_name(APP, "DATABASE_URL", SecretStr("pg://s3cret"), "k1")
    assert name == "web-DATABASE_URL-" + hmac.new(b"k1", b"pg://s3cret", hashlib.sha256).hexdigest()[:8]
    assert name != "web-DATABASE_URL-" + hashlib.sha256(b"pg://s3cret").hexdigest()[:8], "no word list finds it"
    assert commands.secret_name(APP, "DATABASE_URL", SecretStr("pg://s3cret"), "k2") != name, "another cluster, another name"
    assert commands.secret_name(APP, "DATABASE_URL", SecretStr("pg://s3cret"), "") == "web-DATABASE_URL-????????"
    command = commands.create_secret(APP, name, SecretStr("pg://s3cret"))
    assert "s3cret" not in command.render() and command.stdin == b"pg://s3cret"
    assert command.argv[4:] == (name, "deployer.app=web")
    assert command.argv[2] == (
        'docker secret inspect "$1" >/dev/null 2>&1 </dev/null && exit 0; '
        'docker secret create --label "$2" "$1" - >/dev/null'
    )


def test_swarm_specs_and_service_lifecycle() -> None:
    assert commands.publish_spec("8080") == "mode=host,target=8080,protocol=tcp"
    assert commands.publish_spec("53:53/udp") == "mode=host,target=53,published=53,protocol=udp"
    assert commands.mount_spec("/srv/data:/data:ro") == "type=bind,source=/srv/data,target=/data,readonly"
    assert commands.mount_spec("web-data:/data:rw") == "type=volume,source=web-data,target=/data"
    assert commands.undo_update(APP).render() == "docker service rollback --detach web"
    assert commands.remove_service(APP).render() == "docker service rm web"
    assert commands.remove_secrets(["web-A-1"]).render() == "docker secret rm web-A-1"
    assert commands.read_swarm(APP).argv[4:] == ("web",)


def test_the_secret_key_is_made_once_and_a_dry_run_only_reads_it() -> None:
    made = commands.secret_key(APP)
    assert made.argv[4:] == ("/var/lib/deploy/apps/web",)
    assert "/dev/urandom" in made.argv[2] and 'mv "$t" "$f"' in made.argv[2]
    read_only = commands.secret_key(APP, create=False)
    assert read_only.argv[2] == 'f="$1/swarm-secret-key"; cat "$f" 2>/dev/null || true'
