#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, over builds staged by
# tools/stage_builds.sh on the development machine (no rebuild there):
#   the CUDA build: the whole test suite (CPU and CUDA tests) and benchmarks;
#   the CPU build:  the CPU tests;
# under whatever torch that machine has. Logs go to $OUT (or /tmp/out).
#   usage: tools/gpu_session.sh [tests|bench|all] [pytest args...]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
what=${1:-all}
shift || true
export PYTHONUNBUFFERED=1
root=$PWD
site=""
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  site=/tmp/site
fi
with_build() {  # with_build <variant> <command...>
  local variant=$1
  shift
  PYTHONPATH="$root/.gpu/$variant${site:+:$site}" "$@"
}
status=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"
  with_build cuda python3 -P -m momentum_ops.info
  with_build cuda python3 tools/check_abi.py "$root/.gpu/cuda/momentum_ops/_C.so" | tail -3
  with_build cpu python3 tools/check_abi.py "$root/.gpu/cpu/momentum_ops/_C.so" | tail -3
} 2>&1 | tee "$OUT/info.txt"
if [ "$what" = tests ] || [ "$what" = all ]; then
  with_build cuda python3 -P -m pytest test -q -rs -p no:cacheprovider "$@" 2>&1 | tee "$OUT/tests_cuda_build.txt" | tail -25
  status=$((status | PIPESTATUS[0]))
  with_build cpu python3 -P -m pytest test -q -m "not cuda" -p no:cacheprovider "$@" 2>&1 | tee "$OUT/tests_cpu_build.txt" | tail -5
  status=$((status | PIPESTATUS[0]))
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  for bench in benchmarks/*.py; do
    [ "$(basename "$bench")" = common.py ] && continue
    name=$(basename "$bench" .py)
    with_build cuda python3 -P "$bench" 2>&1 | tee "$OUT/bench_$name.txt" | grep -v "^   \[" | tail -60
  done
fi
exit $status
