#!/bin/sh
# Runs every test: unit and integration tests (ctest), then the two
# conformance suites, each printing its own summary line. Ends with one
# line "kiln tests: N passed, M failed" counting the suites.
BUILD=${1:-build}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
JOBS=$(nproc)
passed=0
failed=0
export KILN_CACHE_DIR="$(pwd)/$BUILD/test-cache"

echo "== unit and integration tests"
if (cd "$BUILD" && ctest -j "$JOBS" -E 'wasm_spec|wasi_testsuite' --output-on-failure); then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

echo "== WebAssembly spec tests"
if [ -x "$BUILD/tests/spec/spec_runner" ]; then
  if "$BUILD/tests/spec/spec_runner" --jobs "$JOBS" "$SHARED/testdata/wasm-spec"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
else
  echo "spec_runner was not built"; failed=$((failed + 1))
fi

echo "== WASI testsuite"
if [ -f tests/wasi/run_wasi_testsuite.py ]; then
  if python3 tests/wasi/run_wasi_testsuite.py --kiln "$BUILD/kiln" "$SHARED/testdata/wasi-testsuite"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
else
  echo "WASI testsuite driver missing"; failed=$((failed + 1))
fi

echo "kiln tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
