#!/bin/sh
# autotune pick: Leanest (least VRAM) for /tmp/models/llama3-8b-Q4_0.gguf
# study 'h100-llama3-8b', trial #19: Least peak VRAM of the feasible trials: 1.17 GiB, at 12.3 tok/s (4% of the fastest).
# measured: decode 12.3 tok/s (cv 3.0%, 3 runs), prefill 214.9 tok/s, TTFT 0.60 s, peak VRAM 1.17 GiB (nvml), 11% of the model on the GPU
# on NVIDIA H100 80GB HBM3 79.65 GiB; llama-server 0.5.0-dev (build 0, commit 0c1e570)
# num_gpu 1 = layers on the GPU; num_ctx 8192 = context tokens
exec /tmp/autotune-cache/llama.cpp/0.3.36-cuda/bin/llama-server -m /tmp/models/llama3-8b-Q4_0.gguf -ngl 1 -c 8192 -np 1 --flash-attn on --cache-type-k q8_0 --cache-type-v q8_0 "$@"
