#!/bin/sh
# Runs every test: unit and integration tests (ctest), then the two
# conformance suites, each printing its own summary line. A conformance
# suite fails the run when it passes fewer assertions than the ratchet in
# tests/conformance/baseline. Ends with "kiln tests: N passed, M failed"
# counting the three groups.
BUILD=${1:-build}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
JOBS=$(nproc)
passed=0
failed=0
export KILN_CACHE_DIR="$(pwd)/$BUILD/test-cache"

baseline() { awk -v k="$1" '$1 == k { print $2 }' tests/conformance/baseline; }

# check NAME LOG: compare the "NAME: N passed" line of LOG with the baseline.
check() {
  n=$(grep -E "^$1: [0-9]+ passed" "$2" | tail -1 | sed -E 's/^[^:]*: ([0-9]+) passed.*/\1/')
  want=$(baseline "$1")
  if [ "${n:-0}" -ge "${want:-0}" ]; then
    echo "$1: $n passed (ratchet: at least ${want:-0})"
    passed=$((passed + 1))
  else
    echo "$1: ${n:-no result} passed, below the ratchet of ${want:-0}"
    failed=$((failed + 1))
  fi
}

echo "== unit and integration tests"
if (cd "$BUILD" && ctest -j "$JOBS" -E 'wasm_spec|wasi_testsuite' --output-on-failure); then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

log=$(mktemp)
echo "== WebAssembly spec tests"
"$BUILD/tests/spec/spec_runner" --jobs "$JOBS" "$SHARED/testdata/wasm-spec" > "$log" 2>&1
grep -E 'FAILED|^wasm-spec' "$log"
check wasm-spec "$log"

echo "== WASI testsuite"
if [ -f tests/wasi/run_wasi_testsuite.py ]; then
  python3 tests/wasi/run_wasi_testsuite.py --kiln "$BUILD/kiln" "$SHARED/testdata/wasi-testsuite" > "$log" 2>&1
  tail -1 "$log"
  check wasi-testsuite "$log"
else
  echo "wasi-testsuite: driver not present yet"
  check wasi-testsuite "$log"
fi
rm -f "$log"

echo "kiln tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
