# Buildkite → Callgoose SQIBS bridge. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
# The patched toolchain (go.mod says go 1.27.3). The image's go.env pins
# GOTOOLCHAIN=local, under which the go command would refuse this module;
# naming the release makes every recipe (and `sam build`, which runs the
# build-* targets) fetch it once through the module proxy. Override on the
# command line: make test GOTOOLCHAIN=local.
export GOTOOLCHAIN := go1.27.3
GOTAGS    := lambda.norpc,nethttpomithttp2
GOFLAGS_BUILD := -tags $(GOTAGS) -trimpath -ldflags='-s -w'
BIN       := bin
FUNCTIONS := receiver dispatcher reconciler
# A count, not a duration: a run then does the same work on any machine (and
# Go 1.26's coordinator could fail a clean timed run at its deadline,
# golang/go#75804, fixed in Go 1.27). FUZZTIME=30s works too.
FUZZTIME  ?= 50000x

.PHONY: help build test lint fuzz clean build-ReceiverFunction build-DispatcherFunction build-ReconcilerFunction

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## bootstrap binaries for every function (linux/arm64) in bin/<fn>/bootstrap
	@for fn in $(FUNCTIONS); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/$$fn/bootstrap ./functions/$$fn; \
	  echo "built $(BIN)/$$fn/bootstrap ($$(wc -c < $(BIN)/$$fn/bootstrap | tr -d ' ') bytes)"; \
	done

# `sam build` (BuildMethod: makefile) calls these with ARTIFACTS_DIR set.
# Without ARTIFACTS_DIR they would write /bootstrap: refuse instead.
build-ReceiverFunction build-DispatcherFunction build-ReconcilerFunction: build-%Function:
	@test -n "$(ARTIFACTS_DIR)" || { echo "$@ is for sam build, which sets ARTIFACTS_DIR; use make build"; exit 2; }
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build $(GOFLAGS_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/$(shell echo $* | tr A-Z a-z)

test: ## every test (race detector) plus a short fuzz run of each fuzz target
	$(GO) test -race -count=1 ./...
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME)

fuzz: ## run each fuzz target for FUZZTIME (default 50000x executions; 30s also works)
	@$(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/{f[n++]=$$1} /^ok/{for(i=0;i<n;i++) print $$2, f[i]; n=0}' | \
	  while read -r pkg target; do \
	    echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg" || exit 1; \
	  done

lint: ## gofmt, go vet, cfn-lint template.yaml (when installed)
	@out=$$(gofmt -l .); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v cfn-lint >/dev/null; then \
	  if [ -f template.yaml ]; then echo "cfn-lint --include-checks I template.yaml"; cfn-lint --include-checks I -- template.yaml; fi; \
	else echo "cfn-lint not installed: skipping template lint (pip install cfn-lint)"; fi

clean: ## remove build output
	rm -rf $(BIN) .aws-sam

.PHONY: dev invoke
# Built, then exec'd rather than `go run`: Ctrl-C reaches the whole process
# group, and `go run` reports its interrupted child as a failure (make would
# print "Error 1") even though the dev server drains and exits 0.
dev: ## the whole bridge locally: receiver, in-process queue, dispatcher, SQIBS simulator
	@$(GO) build -o $(BIN)/devserver ./scripts/devserver
	@exec $(BIN)/devserver

# Each function's Timeout in template.yaml (the dispatcher's without the
# Buildkite API; with it, 32s).
TIMEOUT_receiver   := 5s
TIMEOUT_dispatcher := 30s
TIMEOUT_reconciler := 60s

invoke: ## run a function's bootstrap against a local Runtime API: make invoke FN=receiver EVENT=events/receiver-ping.json
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=receiver|dispatcher|reconciler EVENT=events/<file>.json"; exit 2; }
	@$(GO) build -o $(BIN)/invoke ./scripts/invoke
	@$(BIN)/invoke -fn $(FN) -event $(EVENT) -env events/env.json -timeout $(or $(TIMEOUT_$(FN)),5s)

.PHONY: deploy
deploy: ## sam build && sam deploy --guided (needs the SAM CLI and AWS credentials)
	@command -v sam >/dev/null || { echo "the AWS SAM CLI is not installed: https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html"; exit 1; }
	sam build
	sam deploy --guided

.PHONY: soak
soak: ## the fault-injection run as make dev sees it: 30 pipelines x 8 builds in real time (SOAK_PIPELINES, SOAK_BUILDS, SOAK_TIME_SCALE)
	SOAK_PIPELINES=$${SOAK_PIPELINES:-30} SOAK_BUILDS=$${SOAK_BUILDS:-8} SOAK_TIME_SCALE=$${SOAK_TIME_SCALE:-1} \
	  $(GO) test -race -count=1 -run TestFaultInjection -timeout 40m -v ./internal/local/devstack

# The bootstraps are scanned as built for Lambda (same tags, GOOS/GOARCH),
# but keep their symbol table: without one (-ldflags=-s) govulncheck can only
# match modules, and reports every vulnerable symbol of them as present.
.PHONY: vulncheck
vulncheck: ## govulncheck: source ./... and every bootstrap, against a local vuln DB built from golang.org/x/vulndb
	@for fn in $(FUNCTIONS); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -tags $(GOTAGS) -trimpath -o $(BIN)/vulncheck/$$fn/bootstrap ./functions/$$fn; \
	done
	@GO=$(GO) scripts/vulncheck/vulncheck.sh $(foreach fn,$(FUNCTIONS),$(BIN)/vulncheck/$(fn)/bootstrap)

.PHONY: bench
bench: ## benchmarks and the figures of DESIGN §8 (last lines: bench: <name>=<number>)
	@mkdir -p $(BIN)
	$(GO) test -run '^$$' -bench 'BenchmarkReceiver|BenchmarkMap' -benchmem -count 5 ./internal/receiver ./internal/incident | tee $(BIN)/bench-go.txt
	$(GO) run ./scripts/bench -gobench $(BIN)/bench-go.txt
