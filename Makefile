# sealfs — see README.md. `make test` is the one test command (CI runs it).

GO           ?= go
STATICCHECK  := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME     ?= 30s
BENCHTIME    ?= 1s

.PHONY: all build test test-long deps fmt-check vet staticcheck unit bench fuzz demo clean

all: build

build: bin/sealfs

# Static (no cgo: nothing in sealfs needs it): a dynamically linked binary
# spends about 4 ms of every command's start-up in the dynamic loader.
bin/sealfs: FORCE
	CGO_ENABLED=0 $(GO) build -o bin/sealfs ./cmd/sealfs

FORCE:

## test: install missing tools, then gofmt check, go vet, staticcheck and the race-enabled tests
test: deps fmt-check vet staticcheck unit

deps:
	@scripts/install-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

# The crash harness is single-threaded and exhaustive; it runs without the
# race detector, which would only slow it tenfold. So does the mount's
# content model, whose race-enabled run covers one seed of four.
unit:
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -count=1 -run 'TestCrashHarness|TestCrashLargeFiles|TestFormatMkfsInfoCrash|TestContentModel' ./cocoonfs/ ./cocoonfs/fusefs/ ./nvram/

## test-long: the regular suite, the exhaustive tamper sweeps, then longer fuzzing of every target
test-long: test
	SEALFS_LONG=1 $(GO) test -count=1 -timeout 2h ./...
	$(MAKE) fuzz FUZZTIME=5m

## bench: all benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

## fuzz: run every fuzz target for FUZZTIME each
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## demo: an image written, read, verified, rolled back and tampered with; a vTPM manufactured, mounted and restarted; container images built, pushed to a local registry and mounted lazily
demo: build
	@scripts/demo.sh

clean:
	rm -rf bin
