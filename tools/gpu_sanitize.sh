#!/usr/bin/env bash
# Runs on the GPU machine over the CUDA build staged by tools/stage_builds.sh:
# compute-sanitizer's memcheck, racecheck, synccheck and initcheck over the
# CUDA tests that run the kernels (compile/export/TorchScript tests only add
# torch's own kernels). Each tool's log goes to $OUT/sanitize_<tool>.txt; the
# summary line of each is printed. Exit status: non-zero if a tool found errors.
#   usage: tools/gpu_sanitize.sh [seconds per tool] [tools...]
# (racecheck is the slowest: about 3 minutes for these tests on an H100)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
limit=${1:-300}
shift || true
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck synccheck initcheck)
root=$PWD
site=""
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  site=/tmp/site
fi
export PYTHONPATH="$root/.gpu/cuda${site:+:$site}" PYTHONUNBUFFERED=1
# The kernels' tests: every op (conformance rows, float32 and float64) and the
# per-op CUDA tests at their sizes (including FK's 2500-joint device topology).
kernels=(test/test_conformance.py::test_cuda_matches_cpu test/test_fk.py test/test_skinning.py test/test_blend_shapes.py test/test_ik.py)
select=(-m cuda -k "not compile and not export and not torchscript and not opcheck and not cpp")
status=0
for tool in "${tools[@]}"; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check no)
  start=$SECONDS
  timeout "$limit" compute-sanitizer --tool "$tool" "${extra[@]}" --target-processes all --error-exitcode 86 \
    --print-limit 20 python3 -P -m pytest "${kernels[@]}" "${select[@]}" -q -p no:cacheprovider -x \
    > "$OUT/sanitize_$tool.txt" 2>&1
  code=$?
  summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitize_$tool.txt" | tail -1)
  tests=$(grep -E "passed|failed" "$OUT/sanitize_$tool.txt" | tail -1)
  echo "sanitize $tool: exit $code in $((SECONDS - start)) s; ${summary:-no summary}; ${tests:-no pytest summary}"
  [ $code -eq 0 ] || status=1
done
exit $status
