#!/usr/bin/env bash
# Make sure the embedded Fashion-MNIST data (Debian package dataset-fashion-mnist) is installed.
set -euo pipefail
dir="${ROBUSTHASH_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
echo "Fashion-MNIST not found in $dir: installing Debian's package dataset-fashion-mnist" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get is not available: put the four Fashion-MNIST IDX .gz files in a folder and set" >&2
  echo "ROBUSTHASH_FASHION_MNIST=that-folder (or pass --data-dir to robusthash)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null
}
echo "installed Fashion-MNIST into $dir" >&2
