#!/usr/bin/env bash
# The GPU check: scripts/device_check.py, on a machine that has jax, flax,
# optax, orbax, absl, etils, tensorboard, numpy and Pillow but no network,
# TensorFlow, TFDS, clu or ml_collections. device_bundle/ (built here by
# scripts/device_bundle.sh, git-ignored) brings the missing wheels and the
# data; they install into device_bundle/site, not into the system.
#
#   scripts/device_check.sh [--cpu_rehearsal]     # results under $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/device_check}"
mkdir -p "$out"
if [ ! -d device_bundle/wheels ]; then
  echo "No device_bundle/: run scripts/device_bundle.sh on a machine with pip access first." >&2
  exit 2
fi
python3 -m pip install --quiet --upgrade --no-index --no-deps --target device_bundle/site \
  device_bundle/wheels/*.whl 2>&1 | tail -n 3 || true
export PYTHONPATH="$PWD/device_bundle/site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
python3 scripts/device_check.py --out="$out" "$@"
