#!/usr/bin/env bash
# Debian packages the test suite needs, installed when missing.  Runs as root.
set -euo pipefail
packages=(python3-venv postgresql-15 mariadb-server mariadb-backup openssh-server sudo procps)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
