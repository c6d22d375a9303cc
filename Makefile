# gitlab-runner-bhyve
#
#   make test       everything that can run on a machine without full module
#                   access: gofmt, go vet, unit + end-to-end tests (root), typecheck
#   make typecheck  type-check main.go and executors/bhyve against upstream
#   make standins   vet and test the overlay's stand-in modules (ci/standins)
#   make build      every binary that builds here, into bin/
#   make executor   bin/bhyve-executor alone (GOOS=freebsd make executor cross-builds it)
#   make runner     the real gitlab-runner binary (needs full module access)
#   make runner-sandbox  bin/gitlab-runner-sandbox, the same through the overlay's
#                   stand-in modules: a test vehicle, never to be deployed
#   make sim-up / sim-down / demo / bench   the simulated FreeBSD host

SHELL := /bin/bash
GO ?= go

MODULE := gitlab.com/bhyve-ci/gitlab-runner-bhyve
RUNNER_MODULE := gitlab.com/gitlab-org/gitlab-runner
# The sandbox overlay (ci/go.work) stands in for modules the proxy here refuses.
# Only the type-check gate and runner-sandbox use it; see ci/README.md.
OVERLAY := $(CURDIR)/ci/go.work

# Packages that do not import upstream gitlab-runner. Thanks to lazy module
# loading they build with the real go.mod alone, no overlay.
CORE := ./helpers/... ./cmd/... ./ci/...

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS_OURS := -X $(MODULE)/helpers/version.Version=$(VERSION)

# Everything that runs the core runs with the overlay off, so a stray import of
# upstream from a core package fails here rather than on a user's machine.
export GOWORK := off

.PHONY: all test prereqs fmt-check vet shell-check unit adapter typecheck standins build executor runner runner-sandbox bench clean

all: build

# The end-to-end tests (ci/e2e) drive the sandbox runner and bhyve-executor
# as separate processes, so both are built first.
test: prereqs fmt-check vet shell-check runner-sandbox executor unit adapter typecheck standins
	@echo "make test: all checks passed"

prereqs:
	@ci/prereqs.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi; \
	echo "gofmt: clean"

vet:
	$(GO) vet $(CORE)

# The provisioning script runs on FreeBSD's /bin/sh: POSIX sh, checked here.
shell-check:
	sh -n cmd/bhyve-executor/provision/default.sh
	shellcheck -s sh cmd/bhyve-executor/provision/default.sh

unit:
	$(GO) test -count=1 -timeout 15m $(CORE)

# main.go's and the adapter's own tests import upstream, so they compile only
# through the overlay here (and normally on a machine with full module access).
adapter:
	GOWORK=$(OVERLAY) $(GO) test -count=1 . ./executors/bhyve

typecheck:
	GOWORK=$(OVERLAY) $(GO) run ./ci/typecheck -work $(OVERLAY) . ./executors/bhyve

# The stand-in modules' own tests. They are separate modules, reachable only
# through the overlay, so they are named by module path, not directory.
STANDIN_PACKAGES = $(addsuffix /...,$(shell sed -n 's/^module //p' ci/standins/*/go.mod))

standins:
	GOWORK=$(OVERLAY) $(GO) vet $(STANDIN_PACKAGES)
	GOWORK=$(OVERLAY) $(GO) test -count=1 $(STANDIN_PACKAGES)

build:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS_OURS)" -o bin/ ./cmd/... ./ci/cmd/...

executor:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS_OURS)" -o bin/ ./cmd/bhyve-executor

# Side-by-side measurements on the simulated host (root); see ci/bench/README.md.
bench: runner-sandbox executor
	@bash ci/install-deps.sh
	$(GO) run ./ci/bench

# Shell text for a recipe: sets the variables RUNNER_LDFLAGS refers to,
# upstream's version read from the pinned module.
RUNNER_VARS = dir=$$($(GO) list -m -f '{{.Dir}}' $(RUNNER_MODULE)); \
	ver=$$($(GO) list -m -f '{{.Version}}' $(RUNNER_MODULE)); \
	upstream=$$(cat $$dir/VERSION); rev=$${ver\#\#*-}; \
	built=$$(date -u +%Y-%m-%dT%H:%M:%S%z)
# The link-time flags of every gitlab-runner build: our version and upstream's
# version variables, so --version reports both.
RUNNER_LDFLAGS = $(LDFLAGS_OURS) \
	  -X $(RUNNER_MODULE)/common.VERSION=$$upstream \
	  -X $(RUNNER_MODULE)/common.REVISION=$${rev:0:8} \
	  -X $(RUNNER_MODULE)/common.BRANCH=v$$upstream \
	  -X $(RUNNER_MODULE)/common.BUILT=$$built

# The real runner build. Never uses the overlay. On a machine with full module
# access the one extra step is recording labkit/v2's checksums, which this
# project's build machines cannot fetch (see README, "What is verified where").
runner:
	GOFLAGS=-mod=mod $(GO) mod download $(RUNNER_MODULE) gitlab.com/gitlab-org/labkit/v2
	@mkdir -p bin
	@$(RUNNER_VARS); \
	set -x; $(GO) build -ldflags "$(RUNNER_LDFLAGS)" -o bin/gitlab-runner .

# The full runner linked through the overlay's stand-in modules: a test vehicle
# for machines that cannot fetch the real ones, never to be deployed. It says
# so in --version and at every start (helpers/version); see ci/README.md.
runner-sandbox:
	$(GO) mod download $(RUNNER_MODULE)
	@mkdir -p bin
	@$(RUNNER_VARS); \
	set -x; GOWORK=$(OVERLAY) $(GO) build -ldflags "$(RUNNER_LDFLAGS)" -o bin/gitlab-runner-sandbox .

clean:
	rm -rf bin

# --- simulated FreeBSD host (ci/sim) -------------------------------------
# eval "$$(make -s sim-up)" brings a host up and exports PATH, BHYVE_SIM_*.
.PHONY: sim-up sim-down
sim-up: build
	@bin/bhyve-sim up

sim-down: build
	@bin/bhyve-sim down

# --- demo: one job through the real bhyve-executor on a simulated host ----
.PHONY: demo
demo:
	@bash ci/demo.sh
