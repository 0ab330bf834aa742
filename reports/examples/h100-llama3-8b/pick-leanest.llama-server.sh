#!/bin/sh
# autotune pick: Leanest on the GPU for /tmp/models/llama3-8b-Q4_0.gguf
# study 'h100-llama3-8b', trial #1: The least VRAM of the configs fully on the GPU (5.01 GiB), at 99% of the fastest speed.
# measured: decode 285.6 (273.2-298.0) tok/s (95% interval, 3 runs), prefill 6812.9 tok/s, TTFT 0.02 s, peak VRAM 5.01 GiB (nvml), 100% of the model on the GPU
# on NVIDIA H100 80GB HBM3 79.65 GiB; llama-server 0.5.0-dev (build 0, commit 0c1e570)
# num_gpu 33 = layers on the GPU; num_ctx 2048 = context tokens
exec /tmp/autotune-cache/llama.cpp/0.3.36-cuda/bin/llama-server -m /tmp/models/llama3-8b-Q4_0.gguf -ngl 33 -c 2048 -np 1 --flash-attn on --cache-type-k f16 --cache-type-v f16 "$@"
