#!/usr/bin/env bash
# Prepares the SmolLM2 workloads of the benchmark (idempotent; everything is
# cached under ~/.cache/kiln, override with KILN_CACHE):
#
#   bench/setup_llm.sh            the GGUF and its HF-layout f32 conversion
#                                 (for Kiln, torch/transformers and mlx-lm)
#   bench/setup_llm.sh llamacpp   also llama.cpp's llama-bench, built from the
#                                 source vendored in the PyPI sdist
#                                 llama-cpp-python==0.3.36, and an F32 GGUF
#
# Needs python3 with pip, a C++ compiler; cmake comes from PyPI if missing.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="${KILN_BENCH_VENV:-$BENCH/.venv}"
CACHE="${KILN_CACHE:-$HOME/.cache/kiln}"
GGUF="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HF="$CACHE/smollm2-hf"
LC="$CACHE/llamacpp"
SDIST=llama_cpp_python-0.3.36.tar.gz
SDIST_SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
log() { echo "== setup_llm: $*" >&2; }

"$ROOT/scripts/fetch_smollm2.sh" >&2

if [[ ! -f "$HF/config.json" ]]; then
  log "converting the GGUF to HF-layout f32 safetensors in $HF"
  "$VENV/bin/python" -c "import gguf, numpy, safetensors" 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q --disable-pip-version-check gguf==0.19.0 numpy safetensors >&2
  "$VENV/bin/python" "$ROOT/scripts/gguf_to_safetensors.py" "$GGUF" "$HF" >&2
fi

[[ "${1:-}" == llamacpp ]] || exit 0

SRC="$LC/llama_cpp_python-0.3.36/vendor/llama.cpp"
if [[ ! -x "$LC/llama-bench" || ! -x "$LC/llama-quantize" ]]; then
  mkdir -p "$LC"
  if [[ ! -d "$SRC" ]]; then
    # The sdist itself, not `pip download` (which would build cmake and the
    # package's metadata from source).
    url=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ \
      | grep -o "https://[^\"#]*/$SDIST" | head -1)
    log "downloading $url"
    curl -fsSLo "$LC/$SDIST" "$url"
    echo "$SDIST_SHA  $LC/$SDIST" | sha256sum -c - >&2
    tar xzf "$LC/$SDIST" -C "$LC" "llama_cpp_python-0.3.36/vendor/llama.cpp"
  fi
  command -v cmake >/dev/null 2>&1 || {
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check cmake >&2
    export PATH="$VENV/bin:$PATH"
  }
  log "building llama-bench and llama-quantize (several minutes on 2 cores)"
  # The CPU's features by name rather than -march=native: native turns on
  # ggml's AMX kernels, which die with SIGILL on this machine (tilezero
  # without a loaded tile configuration).
  cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX512=ON \
    -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
    -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$SRC/build" --target llama-bench llama-quantize -j "$(nproc)" >&2
  cp "$SRC/build/bin/llama-bench" "$SRC/build/bin/llama-quantize" "$LC/"
fi

F32="$CACHE/smollm2/SmolLM2-135M-Instruct.F32.gguf"
if [[ ! -f "$F32" ]]; then
  log "dequantizing the GGUF to F32 with llama-quantize"
  "$LC/llama-quantize" --allow-requantize "$GGUF" "$F32" F32 >&2
fi
