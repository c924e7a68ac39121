#!/usr/bin/env bash
# Builds the CPU library with AddressSanitizer and UndefinedBehaviorSanitizer
# (gcc) into .sanitize/ and runs the CPU test suite against it. Any ASan
# report or UBSan finding aborts the process and fails the run.
#   usage: tools/sanitize.sh [pytest args...]     (default: the whole CPU suite)
# The source tree's own build is left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
out=.sanitize
rm -rf "$out" build/sanitize
mkdir -p "$out"
info=momentum_ops/_build_info.py
saved=$(mktemp)
[ -f "$info" ] && cp "$info" "$saved"
restore() { [ -s "$saved" ] && cp "$saved" "$info"; rm -f "$saved"; }
trap restore EXIT
MOMENTUM_OPS_CPU_ONLY=1 MOMENTUM_OPS_SANITIZE=1 MAX_JOBS=${MAX_JOBS:-2} \
  "$python" setup.py -q build_ext --build-lib "$out" --build-temp build/sanitize
cp -r momentum_ops/*.py momentum_ops/io "$out/momentum_ops/"
rm -rf "$out/momentum_ops/__pycache__" "$out/momentum_ops/io/__pycache__"
restore
trap - EXIT
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
echo "sanitize: running the CPU tests with $asan"
# Python and torch are not instrumented: leaks are theirs, and their
# allocations are not tracked, so only the library's own memory errors show.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:protect_shadow_gap=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export MOMENTUM_OPS_SANITIZED=1
[ $# -gt 0 ] || set -- test
LD_PRELOAD="$asan $ubsan" PYTHONPATH="$PWD/$out" "$python" -P -c \
  "import momentum_ops, sys; print('sanitize: library', momentum_ops.LIBRARY_PATH); sys.exit(0 if '$out' in momentum_ops.LIBRARY_PATH else 1)"
LD_PRELOAD="$asan $ubsan" PYTHONPATH="$PWD/$out" "$python" -P -m pytest -q -p no:cacheprovider -m "not cuda" "$@"
