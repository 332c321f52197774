#!/usr/bin/env bash
# Kiln benchmark: Kiln and its peers (NumPy, MLX CPU, PyTorch CPU, JAX CPU) on the
# same workloads in the same run. Writes every record as JSON lines to
# bench/results/<timestamp>.jsonl and prints a table of values and Kiln/peer ratios.
#
#   bench/run.sh [--quick] [--only NAME,...] [--peers numpy,mlx,torch,jax]
#                [--no-kiln] [--no-install] [--wait-quiet S] [--out FILE]
#
# See bench/README.md.
set -uo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="${KILN_BENCH_VENV:-$BENCH/.venv}"
BASE_PYTHON="${PYTHON:-python3}"

# What each peer needs from PyPI (pinned to the versions of
# shared/reference/performance.md; override with KILN_BENCH_PIP_<PEER>="...").
declare -A PIP_SPEC=(
  [numpy]="${KILN_BENCH_PIP_NUMPY:-numpy==2.4.6}"
  [mlx]="${KILN_BENCH_PIP_MLX:-mlx[cpu]==0.32.4 mlx-lm==0.32.2}"
  [torch]="${KILN_BENCH_PIP_TORCH:-torch==2.15.0 transformers==5.24.0}"
  [jax]="${KILN_BENCH_PIP_JAX:-jax==0.10.2 jaxlib==0.10.2}"
)
# The import that proves a peer is installed.
declare -A PROBE=([numpy]="numpy" [mlx]="mlx.core, mlx_lm" [torch]="torch, transformers" [jax]="jax, jaxlib")
# llama.cpp is no pip package: bench/setup_llm.sh builds its llama-bench.
ALL_PEERS="numpy,mlx,torch,jax,llamacpp"

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --quick          fewer repeats (5 calls / 0.3 s window / 3 s budget per workload)
  --only LIST      comma-separated workload names, name prefixes or globs
                   (e.g. --only softmax,elementwise_gelu_unfused)
  --peers LIST     peers to run (default numpy,mlx,torch,jax,llamacpp; "none" = Kiln only)
  --no-kiln        skip the Kiln side
  --no-install     never pip-install; skip peers that are not importable
  --wait-quiet S   before each workload wait up to S s for other processes to go
                   idle (default 10, or 0 with --quick)
  --out FILE       write the JSON lines here instead of bench/results/<timestamp>.jsonl
EOF
}

ONLY="" PEERS="$ALL_PEERS" QUICK=0 RUN_KILN=1 INSTALL=1 WAIT_QUIET="" OUT=""
need() { [[ $# -ge 2 && -n "$2" ]] || { echo "run.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) need "$@"; ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#*=}"; shift ;;
    --peers) need "$@"; PEERS="$2"; shift 2 ;;
    --peers=*) PEERS="${1#*=}"; shift ;;
    --quick) QUICK=1; shift ;;
    --no-kiln) RUN_KILN=0; shift ;;
    --no-install) INSTALL=0; shift ;;
    --wait-quiet) need "$@"; WAIT_QUIET="$2"; shift 2 ;;
    --wait-quiet=*) WAIT_QUIET="${1#*=}"; shift ;;
    --out) need "$@"; OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$PEERS" == "none" ]] && PEERS=""
[[ -z "$WAIT_QUIET" ]] && { if [[ $QUICK == 1 ]]; then WAIT_QUIET=0; else WAIT_QUIET=10; fi; }

COMMON=(--wait-quiet "$WAIT_QUIET")
[[ $QUICK == 1 ]] && COMMON+=(--quick)
[[ -n "$ONLY" ]] && COMMON+=(--only "$ONLY")

log() { echo "== $*" >&2; }

# ---------------------------------------------------------------------------
# Peers: venv + pip install (idempotent: only what does not import yet)
# ---------------------------------------------------------------------------
IFS=',' read -r -a WANT <<< "$PEERS"
READY=()
# The SmolLM2 workloads need the model files (downloaded and converted once).
WANT_LLM=0
[[ -z "$ONLY" || "$ONLY" == *smollm2* || "$ONLY" == *'*'* ]] && WANT_LLM=1
if [[ ${#WANT[@]} -gt 0 ]]; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    if [[ $INSTALL == 1 ]]; then
      log "creating venv $VENV"
      "$BASE_PYTHON" -m venv "$VENV" || echo "run.sh: could not create $VENV; peers skipped" >&2
    else
      echo "run.sh: no venv at $VENV and --no-install given; peers skipped" >&2
    fi
  fi
  for p in "${WANT[@]}"; do
    p="${p// /}"
    [[ -z "$p" ]] && continue
    if [[ "$p" == llamacpp ]]; then
      # Only the SmolLM2 workloads have a llama.cpp side.
      [[ $WANT_LLM == 1 ]] || continue
      if [[ -x "${KILN_CACHE:-$HOME/.cache/kiln}/llamacpp/llama-bench" && $INSTALL == 0 ]] \
          || { [[ $INSTALL == 1 ]] && "$BENCH/setup_llm.sh" llamacpp; }; then
        READY+=("$p")
      else
        echo "run.sh: llama.cpp is not built (bench/setup_llm.sh llamacpp); skipped" >&2
      fi
      continue
    fi
    if [[ -z "${PIP_SPEC[$p]+x}" ]]; then
      echo "run.sh: unknown peer '$p' (known: $ALL_PEERS); skipped" >&2
      continue
    fi
    [[ -x "$VENV/bin/python" ]] || continue
    if "$VENV/bin/python" -c "import ${PROBE[$p]}" >/dev/null 2>&1; then
      READY+=("$p")
      continue
    fi
    if [[ $INSTALL == 0 ]]; then
      echo "run.sh: $p is not installed in $VENV (--no-install); skipped" >&2
      continue
    fi
    log "pip install ${PIP_SPEC[$p]} (for $p)"
    # shellcheck disable=SC2086  # the spec is a space-separated package list
    if "$VENV/bin/python" -m pip install --disable-pip-version-check -q ${PIP_SPEC[$p]} >&2 \
        && "$VENV/bin/python" -c "import ${PROBE[$p]}" >/dev/null 2>&1; then
      READY+=("$p")
    else
      echo "run.sh: installing $p failed; $p skipped" >&2
    fi
  done
fi

if [[ $WANT_LLM == 1 && $INSTALL == 1 && -x "$VENV/bin/python" ]]; then
  "$BENCH/setup_llm.sh" || echo "run.sh: bench/setup_llm.sh failed; the SmolLM2 workloads will fail" >&2
fi

# ---------------------------------------------------------------------------
# Output file + a run record (workload "_run", ignored by the table)
# ---------------------------------------------------------------------------
if [[ -z "$OUT" ]]; then
  mkdir -p "$BENCH/results"
  OUT="$BENCH/results/$(date +%Y%m%d-%H%M%S).jsonl"
fi
: > "$OUT" || { echo "run.sh: cannot write $OUT" >&2; exit 1; }
REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ "$REV" != unknown && -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  REV="$REV-dirty"
fi
export KILN_BENCH_REV="$REV"
"$BASE_PYTHON" - "$OUT" "$REV" "$QUICK" "$ONLY" "${READY[*]:-}" "$WAIT_QUIET" <<'EOF' || true
import json, os, platform, sys, time
out, rev, quick, only, peers, wq = sys.argv[1:]
rec = dict(framework="_run", workload="_run", date=time.strftime("%Y-%m-%dT%H:%M:%S"),
           kiln_rev=rev, quick=quick == "1", only=only, peers=peers.split(), wait_quiet=float(wq),
           host=platform.node(), machine=platform.machine(), cpu_count=os.cpu_count(),
           loadavg=os.getloadavg())
try:
    with open("/proc/cpuinfo") as f:
        rec["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
except OSError:
    pass
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
EOF

# ---------------------------------------------------------------------------
# Kiln
# ---------------------------------------------------------------------------
STATUS=0
if [[ $RUN_KILN == 1 ]]; then
  log "building kiln-bench (cargo build --release -p kiln-bench)"
  if (cd "$ROOT" && cargo build --release -p kiln-bench >&2); then
    log "kiln"
    (cd "$ROOT" && cargo run --release -q -p kiln-bench -- "${COMMON[@]}") >> "$OUT" \
      || { echo "run.sh: kiln-bench exited with an error" >&2; STATUS=1; }
  else
    echo "run.sh: kiln-bench does not build; Kiln skipped" >&2
    STATUS=1
  fi
fi

# ---------------------------------------------------------------------------
# Peers, each in its own process
# ---------------------------------------------------------------------------
for p in "${READY[@]}"; do
  log "$p"
  "$VENV/bin/python" "$BENCH/peers.py" --framework "$p" "${COMMON[@]}" >> "$OUT" \
    || { echo "run.sh: peer $p exited with an error" >&2; STATUS=1; }
done

echo >&2
REPORT_PY="$BASE_PYTHON"
command -v "$REPORT_PY" >/dev/null 2>&1 || REPORT_PY="$VENV/bin/python"
"$REPORT_PY" "$BENCH/report.py" "$OUT" || STATUS=1
echo
echo "records: $OUT"
exit $STATUS
