#!/usr/bin/env bash
# The real-GPU check of autotune's llama-server engine, in two phases on the device machine (run them
# back to back: the machine keeps /tmp while it is warm; `run` rebuilds if it finds nothing):
#
#   PHASE=build: build llama.cpp with CUDA (sm_90) from the carried PyPI source, write a Llama-3-8B-shaped
#                random model (F16) and quantize it to Q4_0 and Q8_0.
#   PHASE=run:   autotune on the three files (budget $BUDGET, flash attention and KV cache type tuned too),
#                then llama-bench on every config of the feasible Pareto front.
#
# Carry: .build/sdist/llama.cpp-src-b10488.tar.gz (python -m tuner.engines pack) and .whl (gguf, optuna
# and its SQL dependencies, which the device image lacks).
set -uo pipefail

PHASE=${PHASE:-run}
BUDGET=${BUDGET:-32}
OUT=${OUT:-$PWD/.build/gpu-out}
SDIST=${SDIST:-.build/sdist/llama.cpp-src-b10488.tar.gz}
MODELS=/tmp/models
export AUTOTUNE_CACHE=/tmp/autotune-cache PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$MODELS"
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$OUT/timeline-$PHASE.txt"; }

if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=$PWD:/tmp/site PATH=$PATH:/usr/local/cuda/bin

build() {
  log "build start"
  python3 -m tuner.ggufgen "$MODELS/llama3-8b-F16.gguf" --shape llama3-8b --type F16 >"$OUT/ggufgen.log" 2>&1 &
  AUTOTUNE_LLAMA_SDIST="$SDIST" python3 -m tuner.engines build llama-server --cuda --jobs "$(nproc)" >"$OUT/build-tail.log" 2>&1 || { tail -30 "$OUT/build-tail.log"; exit 1; }
  wait
  BIN=$(dirname "$(python3 -m tuner.engines path llama-server --cuda)")
  for q in Q4_0 Q8_0; do
    "$BIN/llama-quantize" "$MODELS/llama3-8b-F16.gguf" "$MODELS/llama3-8b-$q.gguf" "$q" "$(nproc)" >/dev/null 2>&1
  done
  ls -la "$MODELS" | tee -a "$OUT/timeline-$PHASE.txt"
  log "build done"
}

if [ "$PHASE" = build ] || ! python3 -m tuner.engines path llama-server --cuda >/dev/null 2>&1 || [ ! -f "$MODELS/llama3-8b-Q8_0.gguf" ]; then
  build
fi
[ "$PHASE" = build ] && exit 0

BIN=$(dirname "$(python3 -m tuner.engines path llama-server --cuda)")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt"
log "autotune start (budget $BUDGET)"
timeout 420 python3 -m tuner "$MODELS/llama3-8b-Q4_0.gguf" "$MODELS/llama3-8b-Q8_0.gguf" "$MODELS/llama3-8b-F16.gguf" \
  --engine llama-server --llama-server "$BIN/llama-server" --budget "$BUDGET" --tune-flash-attn --tune-kv-cache \
  --num-predict 64 --max-repeats 5 --storage "sqlite:///$OUT/study.db" --study h100-llama3-8b \
  --out "$OUT/report" 2>&1 | tee "$OUT/autotune.log" | cut -c1-200
log "autotune rc=${PIPESTATUS[0]}"

# llama-bench on the feasible Pareto front, one config at a time (same -ngl, -fa, KV type; tg128, pp512)
python3 - "$OUT" "$BIN/llama-bench" <<'EOF' >"$OUT/bench-commands.txt"
import shlex, sys
from tuner.report import pareto_front
from tuner.study import load_records
out, bench = sys.argv[1], sys.argv[2]
meta, records = load_records(f"sqlite:///{out}/study.db", "h100-llama3-8b")
for r in pareto_front(records):
    args = [bench, "-m", r.tag, "-ngl", str(r.num_gpu if r.num_gpu >= 0 else 99), "-p", "512", "-n", "128", "-r", "3",
            "-fa", "1" if r.flash_attn == "on" else "0", "-o", "jsonl"]
    if r.kv_cache_type:
        args += ["-ctk", r.kv_cache_type, "-ctv", r.kv_cache_type]
    print(r.number, shlex.join(args))
EOF
while read -r number cmd; do
  [ "$SECONDS" -gt 560 ] && { log "skip bench of trial $number (time)"; continue; }
  log "llama-bench trial $number"
  echo "# trial $number: $cmd" >>"$OUT/front-bench.jsonl"
  eval "timeout 60 $cmd" >>"$OUT/front-bench.jsonl" 2>>"$OUT/front-bench.err"
done <"$OUT/bench-commands.txt"
tar -C "$OUT" -czf "$OUT/report.tgz" report
log "done"
