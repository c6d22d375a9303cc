#!/usr/bin/env bash
# make demo: on a fresh Debian machine, as root, install what is needed,
# build, and run one CI job through the real bhyve-executor binary on a
# simulated FreeBSD host, then tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "make demo: run as root: the simulated host creates network namespaces" >&2
  exit 1
fi
export PATH=/usr/local/go/bin:$PATH GOWORK=off
bash ci/install-deps.sh
echo "==> Building bin/bhyve-executor and bin/bhyve-demo" >&2
make -s build
exec bin/bhyve-demo --executor bin/bhyve-executor "$@"
