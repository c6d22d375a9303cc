#!/usr/bin/env bash
# Installs, by Debian package name, what the simulated FreeBSD host and the
# test suite need. Used by .ci/run and `make demo`; safe to run again.
set -euo pipefail
packages=(kea-dhcp4-server openssh-server openssh-client udhcpc iproute2 procps util-linux passwd time git make ca-certificates shellcheck)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start a system Kea or sshd: the simulated host runs its own.
policy=/usr/sbin/policy-rc.d
created_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ -n "$created_policy" ] && rm -f "$policy"' EXIT
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/install-deps.log 2>&1; then
  apt-get update -q >>/tmp/install-deps.log 2>&1
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/install-deps.log 2>&1 || { cat /tmp/install-deps.log >&2; exit 1; }
fi
