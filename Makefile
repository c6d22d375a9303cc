# gitlab-runner-bhyve
#
#   make test       everything that can run on a machine without full module
#                   access: gofmt, go vet, unit + end-to-end tests (root), typecheck
#   make typecheck  type-check main.go and executors/bhyve against upstream
#   make build      every binary that builds here, into bin/
#   make executor   bin/bhyve-executor alone (GOOS=freebsd make executor cross-builds it)
#   make runner     the real gitlab-runner binary (needs full module access)
#   make sim-up / sim-down / demo / bench   the simulated FreeBSD host

SHELL := /bin/bash
GO ?= go

MODULE := gitlab.com/bhyve-ci/gitlab-runner-bhyve
RUNNER_MODULE := gitlab.com/gitlab-org/gitlab-runner
# The sandbox overlay (ci/go.work) stands in for modules the proxy here refuses.
# Only the type-check gate uses it; see ci/README.md.
OVERLAY := $(CURDIR)/ci/go.work

# Packages that do not import upstream gitlab-runner. Thanks to lazy module
# loading they build with the real go.mod alone, no overlay.
CORE := ./helpers/... ./cmd/... ./ci/...

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS_OURS := -X $(MODULE)/helpers/version.Version=$(VERSION)

# Everything that runs the core runs with the overlay off, so a stray import of
# upstream from a core package fails here rather than on a user's machine.
export GOWORK := off

.PHONY: all test prereqs fmt-check vet shell-check unit typecheck build executor runner bench clean

all: build

test: prereqs fmt-check vet shell-check unit typecheck
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
	$(GO) test -count=1 -timeout 12m $(CORE)

typecheck:
	GOWORK=$(OVERLAY) $(GO) run ./ci/typecheck -work $(OVERLAY) . ./executors/bhyve

build:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS_OURS)" -o bin/ ./cmd/... ./ci/cmd/...

executor:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS_OURS)" -o bin/ ./cmd/bhyve-executor

# Side-by-side measurements on the simulated host (root); see ci/bench/README.md.
bench:
	@bash ci/install-deps.sh
	$(GO) run ./ci/bench

# The real runner build. Never uses the overlay. On a machine with full module
# access the one extra step is recording labkit/v2's checksums, which this
# project's build machines cannot fetch (see README, "What is verified where").
runner:
	GOFLAGS=-mod=mod $(GO) mod download $(RUNNER_MODULE) gitlab.com/gitlab-org/labkit/v2
	@mkdir -p bin
	@dir=$$($(GO) list -m -f '{{.Dir}}' $(RUNNER_MODULE)); \
	ver=$$($(GO) list -m -f '{{.Version}}' $(RUNNER_MODULE)); \
	upstream=$$(cat $$dir/VERSION); rev=$${ver##*-}; \
	built=$$(date -u +%Y-%m-%dT%H:%M:%S%z); \
	set -x; $(GO) build -ldflags "$(LDFLAGS_OURS) \
	  -X $(RUNNER_MODULE)/common.VERSION=$$upstream \
	  -X $(RUNNER_MODULE)/common.REVISION=$${rev:0:8} \
	  -X $(RUNNER_MODULE)/common.BRANCH=v$$upstream \
	  -X $(RUNNER_MODULE)/common.BUILT=$$built" \
	  -o bin/gitlab-runner .

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
