#!/usr/bin/env bash
# Install everything nginx-ha's demo, tests and benchmark need on a fresh Debian 12 machine (as root):
#   - keepalived, nginx, curl, iproute2, procps, util-linux from apt, without starting their daemons;
#   - a virtualenv in .venv with pinned Salt 3008.x and the test tooling.
# Idempotent: a second run installs nothing and takes about a second.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
stamp="$venv/.installed"

log() { printf '[setup] %s\n' "$*"; }

apt_pkgs=(keepalived nginx curl iproute2 procps util-linux psmisc nftables iptables)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "setup: run as root to install ${missing[*]}" >&2; exit 1; }
    log "apt: installing ${missing[*]}"
    # Packages must not start their daemons in the root namespace: the lab runs them in its hosts.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    trap '[ $created_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "apt: keepalived, nginx, curl already installed"
fi

req_sum=$(cat "$here/requirements.txt" "$here/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$req_sum" ]; then
    log "venv: $venv up to date"
else
    log "venv: installing Salt and test tooling into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" -c "$here/constraints.txt" 2>&1 | { grep -v "WARNING: Location" || true; }
    echo "$req_sum" > "$stamp"
fi
log "ready: $("$venv/bin/salt-call" --version 2>/dev/null), $(keepalived --version 2>&1 | head -1), $(nginx -v 2>&1)"
