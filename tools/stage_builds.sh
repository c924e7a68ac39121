#!/usr/bin/env bash
# Builds the CPU-only and the CUDA variant of the library on this machine and
# stages each as a ready package folder under .gpu/<variant>/momentum_ops, for
# running the very same files elsewhere (other torch versions, the GPU machine)
# without rebuilding. Leaves the CUDA variant built in place.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
for variant in cpu cuda; do
  rm -rf build ".gpu/$variant"
  mkdir -p ".gpu/$variant"
  if [ "$variant" = cpu ]; then
    MOMENTUM_OPS_CPU_ONLY=1 MAX_JOBS=${MAX_JOBS:-2} "$python" setup.py -q build_ext --inplace
  else
    FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} "$python" setup.py -q build_ext --inplace
  fi
  cp -r momentum_ops ".gpu/$variant/"
  rm -rf ".gpu/$variant/momentum_ops/__pycache__"
  echo "staged .gpu/$variant: $(grep -E "cuda_version|torch_full" momentum_ops/_build_info.py | tr -s ' ' | tr '\n' ' ')"
done
