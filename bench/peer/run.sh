#!/usr/bin/env bash
# Tessera vs PyTorch on the same weights, inputs and thread count: runs `tessera-bench` (which
# exports what it ran), then bench/peer/peer.py (diffusers), and prints Tessera time / PyTorch
# time per row. See docs/PERFORMANCE.md for the peer venv.
#
#   bench/peer/run.sh                       # dit + vae, threads = cores, 5 runs
#   THREADS=2 RUNS=7 BIG_RUNS=3 SUITES="dit" bench/peer/run.sh
#
# Environment: PEER_PYTHON (default /tmp/peer/bin/python), THREADS, RUNS, BIG_RUNS (the
# 33×256×256 VAE clip; 0 skips it), SUITES ("dit vae"), OUT (default target/peer).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PEER_PYTHON:-/tmp/peer/bin/python}
THREADS=${THREADS:-$(nproc)}
RUNS=${RUNS:-5}
BIG_RUNS=${BIG_RUNS:-5}
SUITES=${SUITES:-dit vae}
OUT=${OUT:-target/peer}
if [ ! -x "$PY" ]; then
    echo "no python at $PY: set PEER_PYTHON or create the venv (docs/PERFORMANCE.md)" >&2
    exit 2
fi
mkdir -p "$OUT"
cargo build --release -p tessera-bench
# candle (gemm and rayon) reads RAYON_NUM_THREADS; torch gets --threads.
# shellcheck disable=SC2086
RAYON_NUM_THREADS=$THREADS target/release/tessera-bench $SUITES --runs "$RUNS" \
    --big-runs "$BIG_RUNS" --export "$OUT" --json >"$OUT/tessera.json"
"$PY" bench/peer/peer.py "$OUT" --threads "$THREADS" --runs "$RUNS" --big-runs "$BIG_RUNS" \
    --out "$OUT/peer.json"
