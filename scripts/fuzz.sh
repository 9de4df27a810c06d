#!/usr/bin/env bash
# A time-boxed libFuzzer run of the fuzz targets (native/testing/fuzz/): each is built with clang
# and -fsanitize=fuzzer,address,undefined and run for SECONDS (default 600) from the committed seed
# corpus test/fuzz/corpus/<target>/. Findings (crash-*, the input that broke an invariant or made a
# sanitizer report) land in build/fuzz/<target>/; with --merge, inputs that add coverage are merged
# back into the committed corpus (which `npm test` replays: test/11.fuzz-corpus).
#
#   scripts/fuzz.sh [--merge] [SECONDS] [safetensors|validators ...]
#   CXX=clang++-14 JOBS=1 scripts/fuzz.sh 60 safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
merge=0
if [[ "${1:-}" == "--merge" ]]; then merge=1; shift; fi
seconds="${1:-600}"; shift || true
targets=("$@"); [[ ${#targets[@]} -eq 0 ]] && targets=(safetensors validators)
cxx="${CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
[[ -n "$cxx" ]] || { echo "fuzz.sh: clang++ is needed (apt-get install clang libclang-rt-dev)"; exit 2; }
out=build/fuzz
mkdir -p "$out"
core=$(node -p "require('./native/sources.json').core.join(' ')")
for t in "${targets[@]}"; do
  bin="$out/fuzz_$t"
  echo "fuzz.sh: building $bin"
  # -O1 -g: sanitizer-friendly; the thread pool is left on one thread (NODE_MEND_THREADS=1 below)
  "$cxx" -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Inative -DMEND_FUZZ_TARGET="fuzz_$t" $core native/testing/fuzz/fuzz_targets.cc native/testing/fuzz/libfuzzer_main.cc \
    -lpthread -o "$bin"
  work="$out/$t/corpus"
  mkdir -p "$work" "$out/$t"
  # findings of an earlier run are kept aside, so only this run's count
  if ls "$out/$t"/crash-* "$out/$t"/leak-* "$out/$t"/timeout-* >/dev/null 2>&1; then
    mkdir -p "$out/$t/earlier" && mv "$out/$t"/crash-* "$out/$t"/leak-* "$out/$t"/timeout-* "$out/$t/earlier/" 2>/dev/null || true
  fi
  echo "fuzz.sh: running $t for $seconds s"
  status=0
  NODE_MEND_THREADS=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="$out/$t/" "$work" "test/fuzz/corpus/$t" 2>&1 | tail -n 25 || status=$?
  if [[ $status -ne 0 ]] || ls "$out/$t"/crash-* "$out/$t"/leak-* "$out/$t"/timeout-* >/dev/null 2>&1; then
    echo "fuzz.sh: $t FOUND SOMETHING (see $out/$t/)"; exit 1
  fi
  if [[ $merge -eq 1 ]]; then
    NODE_MEND_THREADS=1 "$bin" -merge=1 -max_len=8192 "test/fuzz/corpus/$t" "$work" 2>&1 | tail -n 2
  fi
  echo "fuzz.sh: $t: no findings in $seconds s"
done
