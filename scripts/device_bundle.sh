#!/usr/bin/env bash
# Builds device_bundle/ (git-ignored), what scripts/device_check.sh needs on
# a GPU machine without network, TensorFlow, TFDS, clu or ml_collections:
#   device_bundle/wheels/   pure-Python wheels of clu and ml_collections, and
#                           wrapt for Python 3.12 (clu imports it);
#   device_bundle/data/     CIFAR-10 and MNIST as <split>/<class>/<image>
#                           archives (config.image_folder reads them).
#
#   scripts/device_bundle.sh DIR_WITH_ARCHIVES [PYTHON_VERSION]
#
# DIR_WITH_ARCHIVES holds cifar10-jpeg.tar.gz and mnist-png.tar.gz (any
# ImageFolder-style archives of those names). PYTHON_VERSION (default 3.12,
# the GPU machine's) picks wrapt's wheel; pass this machine's for a CPU
# rehearsal. Run it where pip reaches PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
archives="${1:?usage: scripts/device_bundle.sh DIR_WITH_ARCHIVES [PYTHON_VERSION]}"
pyver="${2:-3.12}"
rm -rf device_bundle
mkdir -p device_bundle/wheels device_bundle/data
pins() { grep -E "^($1)==" requirements.txt | sed 's/ *#.*//'; }
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  -d device_bundle/wheels $(pins 'clu|ml_collections')
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$pyver" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d device_bundle/wheels "wrapt==2.5.2"
cp "$archives/cifar10-jpeg.tar.gz" "$archives/mnist-png.tar.gz" device_bundle/data/
du -sh device_bundle
