"""`--hosts` selection and the precedence of host entry, inventory ssh section and ~/.ssh/config."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer import config, inventory, transport
from deployer.errors import UsageError

SSH_CONFIG = """\
Host web1
  HostName 192.0.2.10
  User alice
  Port 2200
  IdentityFile ~/.ssh/web1_key
  ProxyJump bastion@jump.example.com:2222

Host *
  User fallback
"""


def _inventory(tmp_path: Path, ssh: str = "") -> config.Inventory:
    (tmp_path / "ssh_config").write_text(SSH_CONFIG)
    text = (
        "app: {name: web, image: r/web}\n"
        f"ssh: {{config_file: {tmp_path / 'ssh_config'}{ssh}}}\n"
        "hosts:\n  prod: [web1, {address: web2, port: 2222, user: bob}]\n  staging: [web3, web1]\n"
    )
    return config.parse(text, tmp_path / "inventory.yaml")


def _select(inv: config.Inventory, spec: str) -> list[inventory.Host]:
    return inventory.select(inv, spec, transport.ssh_config(inv))


def test_ssh_config_fills_what_the_inventory_does_not_say(tmp_path: Path) -> None:
    (web1,) = _select(_inventory(tmp_path), "web1")
    assert web1 == inventory.Host(
        name="web1",
        hostname="192.0.2.10",
        port=2200,
        user="alice",
        identity_files=(str(Path("~/.ssh/web1_key").expanduser()),),
        proxy_jump="bastion@jump.example.com:2222",
    )


def test_inventory_wins_over_ssh_config_and_host_entry_wins_over_both(tmp_path: Path) -> None:
    hosts = _select(_inventory(tmp_path, ", user: deploy, port: 22, identity_file: keys/ci"), "prod")
    assert [(h.name, h.user, h.port) for h in hosts] == [("web1", "deploy", 22), ("web2", "bob", 2222)]
    assert hosts[0].identity_files == (str(tmp_path / "keys" / "ci"),), "relative to the inventory file"


def test_groups_all_and_lists_without_duplicates(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    assert [h.name for h in _select(inv, "all")] == ["web1", "web2", "web3"]
    assert [h.name for h in _select(inv, "staging,prod")] == ["web3", "web1", "web2"]
    assert [h.name for h in _select(inv, "web2, web3")] == ["web2", "web3"]


@pytest.mark.parametrize("spec", ["nowhere", "prod,nowhere", " , "])
def test_hosts_naming_nothing_is_a_usage_error(tmp_path: Path, spec: str) -> None:
    with pytest.raises(UsageError) as caught:
        _select(_inventory(tmp_path), spec)
    assert caught.value.hint == "groups: all, prod, staging"


def test_proxy_jump_spec() -> None:
    assert inventory.parse_jump("bastion@jump:2222").model_dump() == {"address": "jump", "port": 2222, "user": "bastion"}
    assert inventory.parse_jump("jump").model_dump() == {"address": "jump", "port": None, "user": None}
