#!/usr/bin/env bash
# Builds both addons with AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/, separate
# from build/) and runs the native-heavy tests against them: the sanitizer runtimes are preloaded
# into node, NODE_MEND_ADDON / NODE_MEND_TESTING_ADDON point the library and the tests at the
# instrumented addons (child processes inherit both). Any ASan or UBSan report fails the run.
#
#   scripts/sanitize.sh [test files...]     (default: the native-heavy tests below)
set -euo pipefail
cd "$(dirname "$0")/.."
out=build-asan
echo "sanitize.sh: building the addons with -fsanitize=address,undefined (CMake option NODE_MEND_SANITIZE) into $out/"
CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-2}" node node_modules/cmake-js/bin/cmake-js compile --directory . --out "$out" --log-level warn \
  --CDNODE_MEND_TESTING=ON --CDNODE_MEND_SANITIZE=ON --CDNODE_MEND_CUDA=OFF
for f in "$out/Release/node_mend.node" "$out/Release/node_mend_testing.node"; do
  syms=$(nm -D "$f")
  grep -q __asan_init <<<"$syms" || { echo "sanitize.sh: $f is not instrumented"; exit 1; }
done
tests=("$@")
if [[ ${#tests[@]} -eq 0 ]]; then
  tests=(test/11.safetensors.test.ts test/11.fuzz-corpus.test.ts test/12.kernels.test.ts test/14.optimizer.test.ts
         test/17.atomic-writes.test.ts test/18.files.test.ts test/19.threadpool.test.ts test/20.gpt2.test.ts test/21.generate.test.ts
         test/24.coded-errors.test.ts test/25.gpt2-errors.test.ts test/28.native-faults.test.ts test/29.non-finite.test.ts
         test/30.mend.test.ts test/31.mend-semantics.test.ts test/32.lifelong.test.ts test/40.train.test.ts test/44.tampered.test.ts)
fi
libasan=$(${CXX:-g++} -print-file-name=libasan.so)
libubsan=$(${CXX:-g++} -print-file-name=libubsan.so)
log=$out/sanitize.log
# detect_leaks=0: node itself does not free everything at exit; halt_on_error: a report fails the test.
LD_PRELOAD="$libasan:$libubsan" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  NODE_MEND_ADDON="$PWD/$out/Release/node_mend.node" NODE_MEND_TESTING_ADDON="$PWD/$out/Release/node_mend_testing.node" \
  npx tap --timeout 900 "${tests[@]}" 2>&1 | tee "$log" | grep -E '^(not )?ok|# \{' || true
if grep -qE 'ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer' "$log"; then
  echo "sanitize.sh: SANITIZER REPORTS (see $log)"; exit 1
fi
if grep -qE '^not ok' "$log"; then echo "sanitize.sh: tests failed (see $log)"; exit 1; fi
echo "sanitize.sh: clean (${#tests[@]} test files under ASan + UBSan)"
