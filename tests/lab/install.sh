#!/bin/sh
# Install the Debian packages the end-to-end lab needs (idempotent).
set -eu
PKGS="docker.io docker-registry openssh-server busybox-static debootstrap apache2-utils openssl git curl"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y $missing
fi
