# intel-gpu-cdi: `make build`, `make test`, `make demo`, `make bench`; `make help` lists every target.

GO       ?= go
BIN      := bin/intel-gpu-cdi
DRA_BIN  := bin/intel-gpu-cdi-dra
MODULE   := github.com/intel-gpu-cdi/intel-gpu-cdi
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X $(MODULE)/cmd/intel-gpu-cdi/app.Version=$(VERSION)
# Build tags of every product build (here, deployments/image/Dockerfile,
# test/bench; TestEveryProductBuildHasTheSameTags keeps them one):
# urfave_cli_no_docs leaves out urfave/cli's man page and Markdown writers,
# which no command uses, and the Markdown parser they link (BENCHMARKS.md,
# "At the floor").
TAGS     := urfave_cli_no_docs
# auto: real char devices when mknod is permitted (root), else symlinks to host devices.
DEMO_MODE ?= auto
FUZZTIME  ?= 30s

.PHONY: all build test vet fmt-check demo bench fuzz golden e2e-cluster clean help

all: build

help:
	@echo 'build      bin/intel-gpu-cdi and bin/intel-gpu-cdi-dra (the DRA driver), version from git describe'
	@echo 'test       go vet, gofmt check, go test -race ./..., and test/deploy when present'
	@echo 'demo       list, generate and the kubelet plugin on a fake node of three GPUs (no GPU, no root needed)'
	@echo 'bench      every benchmark with allocations, then the ratio tables against the no-op device plugin and DRA plugin (see BENCHMARKS.md; the DRA table needs test/cluster/build.sh)'
	@echo 'fuzz       fuzz the sysfs parsers, the scan, spec building and encoding, the uevent parser, FUZZTIME each (default 30s)'
	@echo 'golden     rewrite the golden specs in specs/ from the fixtures'
	@echo 'e2e-cluster  the device plugin and the DRA driver on a real kubelet + containerd 2 and a one-node cluster (root; builds pinned components once)'
	@echo 'clean      remove bin/'

build:
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/intel-gpu-cdi
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(DRA_BIN) ./cmd/intel-gpu-cdi-dra

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: vet fmt-check
	$(GO) test -race -count=1 ./...
	test/deploy/run.sh

# The fake node lives in a temporary directory that is removed at the end.
demo: build
	@set -eu; \
	dir=$$(mktemp -d "$${TMPDIR:-/tmp}/intel-gpu-cdi-demo.XXXXXX"); \
	trap 'rm -rf "$$dir"' EXIT; \
	step() { printf '\n$$ %s\n' "$$*"; "$$@"; }; \
	$(GO) run ./test/cmd/fakenode-demo -root "$$dir/node" -mode $(DEMO_MODE); \
	set -- --sysfs-root "$$dir/node/sys" --dev-root "$$dir/node/dev"; \
	step $(BIN) list "$$@"; \
	step $(BIN) generate --log-level warn "$$@"; \
	step $(BIN) generate "$$@" --output "$$dir/cdi/intel.com-gpu.json" --by-path none; \
	step stat -c '%A %a %n' "$$dir/cdi" "$$dir/cdi/intel.com-gpu.json"; \
	printf '\n$$ %s\n' "go run ./test/cmd/demo-kubelet --binary $(BIN)   # the plugin against a built-in fake kubelet"; \
	$(GO) run ./test/cmd/demo-kubelet --binary $(BIN)

# The floor ratio tables come last: test/bench builds the binaries and runs
# them in turns (about two minutes for the device plugin, six for the DRA
# driver against a real kube-apiserver); BENCH_ROUNDS and friends tune it.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v '/test/bench$$')
	$(GO) test -run '^$$' -bench . -count=1 -timeout 30m ./test/bench

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParsers$$' -fuzztime $(FUZZTIME) ./cdi/discovery
	$(GO) test -run '^$$' -fuzz '^FuzzScanAttribute$$' -fuzztime $(FUZZTIME) ./cdi/discovery
	$(GO) test -run '^$$' -fuzz '^FuzzParsersOnHostileInput$$' -fuzztime $(FUZZTIME) ./cdi/discovery
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizeDeviceID$$' -fuzztime $(FUZZTIME) ./cdi/discovery
	$(GO) test -run '^$$' -fuzz '^FuzzIsPCIAddress$$' -fuzztime $(FUZZTIME) ./cdi/discovery
	$(GO) test -run '^$$' -fuzz '^FuzzScanHostileTree$$' -fuzztime $(FUZZTIME) ./cdi/discovery
	$(GO) test -run '^$$' -fuzz '^FuzzBuild$$' -fuzztime $(FUZZTIME) ./cdi/spec
	$(GO) test -run '^$$' -fuzz '^FuzzMarshal$$' -fuzztime $(FUZZTIME) ./cdi/spec
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./kubeplugin/health/uevent
	$(GO) test -run '^$$' -fuzz '^FuzzParseAERTotal$$' -fuzztime $(FUZZTIME) ./kubeplugin/health

# The real-kubelet suite (issues 6 and 10): builds containerd, Kubernetes and
# friends once into E2E_CACHE_DIR (default /var/cache/intel-gpu-cdi-e2e) and
# reuses them; the static-pod kubelet, then a one-node cluster with the device
# plugin and the DRA driver.
e2e-cluster: build
	E2E_BINARY=$(CURDIR)/$(BIN) E2E_DRA_BINARY=$(CURDIR)/$(DRA_BIN) test/cluster/run.sh

golden:
	$(GO) test ./specs -run '^TestGoldenSpecs$$' -args -update

clean:
	rm -rf bin/
