#!/usr/bin/env bash
# Fails loudly, naming the Debian package, when something the test suite needs
# is missing. A test that silently skips on a missing tool proves nothing.
set -u
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian package: $2)"); }
need go golang
need gofmt golang
need git git
need ip iproute2
need kea-dhcp4 kea-dhcp4-server
need sshd openssh-server
need ssh openssh-client
need ssh-keygen openssh-client
need udhcpc udhcpc
need pgrep procps
need shellcheck shellcheck
if [ "$(id -u)" != 0 ]; then
  missing+=("root: the simulated host creates network namespaces (run as root, as CI does)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "make test: missing prerequisites:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "install them with: bash .ci/run (as root), or apt-get install the packages above" >&2
  exit 1
fi
echo "prereqs: ok"
