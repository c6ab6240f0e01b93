"""Key material made with the usual command-line tools: CA, server certificate,
htpasswd file and the SSH client key."""

from __future__ import annotations

import subprocess
from pathlib import Path

_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "365"]


def _run(argv: list[str], input: bytes | None = None) -> bytes:
    return subprocess.run(argv, input=input, capture_output=True, check=True).stdout


def make_ca(cert: Path, key: Path) -> None:
    """A self-signed CA certificate and its key."""
    _run(["openssl", "req", "-x509", *_EC_KEY, "-keyout", str(key), "-out", str(cert),
          "-subj", "/CN=deploy-lab CA"])


def make_server_cert(cert: Path, key: Path, ca_cert: Path, ca_key: Path,
                     ips: list[str], names: list[str]) -> None:
    """A TLS server certificate signed by the CA, valid for `ips` and `names`."""
    san = ",".join([f"IP:{ip}" for ip in ips] + [f"DNS:{name}" for name in names])
    _run(["openssl", "req", "-x509", *_EC_KEY, "-keyout", str(key), "-out", str(cert),
          "-CA", str(ca_cert), "-CAkey", str(ca_key), "-subj", f"/CN={names[0]}",
          "-addext", f"subjectAltName={san}",
          "-addext", "basicConstraints=critical,CA:FALSE",
          "-addext", "extendedKeyUsage=serverAuth"])


def make_htpasswd(path: Path, user: str, password: str) -> None:
    """An htpasswd file with one bcrypt entry."""
    path.write_bytes(_run(["htpasswd", "-Bin", user], input=password.encode()))


def make_ssh_key(key: Path) -> None:
    """An ed25519 key pair without passphrase: `key` (0600) and `key`.pub."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy-lab", "-f", str(key)])
    key.chmod(0o600)
