# kiln: top-level entry points. CMake does the building underneath.
#
#   make            build build/kiln (and libkiln, tests, guests)
#   make demo       install what is missing, build, run the main demo
#   make test       install what is missing, build, run every test
#   make spec       WebAssembly spec tests only
#   make wasi-testsuite   WASI preview1 testsuite only
#   make asan       every unit test under AddressSanitizer + UBSan
#   make bench      benchmarks (tables on stdout, JSON under build/bench/)

BUILD ?= build
# cmake --build runs make underneath: no "Entering directory" lines.
MAKEFLAGS += --no-print-directory
JOBS ?= $(shell nproc)
SHARED ?= $(abspath ../shared)

.PHONY: all build deps demo test spec wasi-testsuite asan bench clean

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

deps:
	@sh scripts/install-deps.sh

demo: deps build
	@sh scripts/demo.sh $(BUILD)

test: deps build
	@SHARED=$(SHARED) sh scripts/test.sh $(BUILD)

spec: build
	@$(BUILD)/tests/spec/spec_runner --jobs $(JOBS) $(SHARED)/testdata/wasm-spec

wasi-testsuite: build
	@python3 tests/wasi/run_wasi_testsuite.py --kiln $(BUILD)/kiln $(SHARED)/testdata/wasi-testsuite

asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=handle_segv=0:allow_user_segv_handler=1:detect_leaks=1 \
	  ctest -E 'wasm_spec|wasi_testsuite' --output-on-failure

bench: build
	@sh scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan
