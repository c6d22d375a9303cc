#!/usr/bin/env bash
# make demo: on a fresh Debian machine, as root, install what is needed,
# build, register a gitlab-runner with the bhyve executor against a fake
# GitLab, run the article's sample job through upstream's own runner loop on
# a simulated FreeBSD host, then the same job through the Custom executor
# and bhyve-executor, and tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "make demo: run as root: the simulated host creates network namespaces" >&2
  exit 1
fi
export PATH=/usr/local/go/bin:$PATH GOWORK=off
bash ci/install-deps.sh
echo "==> Building bin/gitlab-runner-sandbox (a test build with stand-in modules), bin/bhyve-executor, bin/bhyve-demo" >&2
make -s runner-sandbox build >/dev/null
exec bin/bhyve-demo --runner bin/gitlab-runner-sandbox --executor bin/bhyve-executor "$@"
