#!/usr/bin/env bash
# Fetches Fashion-MNIST (Zalando, MIT licence) once, from Debian's
# `dataset-fashion-mnist` package, and caches the four IDX files, decompressed,
# under ${KILN_CACHE:-$HOME/.cache/kiln}/fashion-mnist/. Idempotent: does
# nothing if they are already there. Prints the directory on stdout.
set -euo pipefail

dest="${KILN_CACHE:-$HOME/.cache/kiln}/fashion-mnist"
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

cached=1
for f in "${files[@]}"; do
    [[ -s "$dest/$f" ]] || cached=0
done
if [[ $cached == 1 ]]; then
    echo "$dest"
    exit 0
fi

for tool in apt-get dpkg-deb gzip; do
    command -v "$tool" >/dev/null || { echo "fetch_fashion_mnist: '$tool' is required (a Debian/Ubuntu system)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# `apt-get download` needs no root; refresh the package lists only if the
# package is unknown (needs root then).
if ! apt-get download dataset-fashion-mnist >&2; then
    echo "fetch_fashion_mnist: package not found; running apt-get update" >&2
    if [[ $(id -u) == 0 ]]; then apt-get update >&2; else sudo apt-get update >&2; fi
    apt-get download dataset-fashion-mnist >&2
fi
dpkg-deb -x dataset-fashion-mnist_*.deb extracted
src="extracted/usr/share/datasets/fashion-mnist"

mkdir -p "$dest"
for f in "${files[@]}"; do
    [[ -f "$src/$f.gz" ]] || { echo "fetch_fashion_mnist: $f.gz missing from the package" >&2; exit 1; }
    # Decompress to a temporary name first so an interrupted run never leaves
    # a truncated file that looks cached.
    gzip -dc "$src/$f.gz" >"$dest/$f.part"
    mv "$dest/$f.part" "$dest/$f"
done
echo "$dest"
