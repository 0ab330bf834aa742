#!/bin/sh
# autotune pick: Leanest on the GPU for /tmp/models/llama3-8b-Q4_0.gguf
# study 'q-h100-gpu-check-24bd3aaf-llama3-8b-q4_0', trial #1: The least VRAM of the configs fully on the GPU (5.01 GiB), at 100% of the fastest speed.
# measured: decode 293.1 (289.5-296.6) tok/s (95% interval, 3 runs), prefill 6844.5 tok/s, TTFT 0.02 s, peak VRAM 5.01 GiB (nvml), 100% of the model on the GPU, energy 1.55 J/token
# on NVIDIA H100 80GB HBM3 79.65 GiB; llama-server 0.1.2-dev (build 10488, commit b10488)
# num_gpu 33 = layers on the GPU; num_ctx 2048 = context tokens
exec /tmp/autotune-cache/llama.cpp/b10488-cuda/bin/llama-server -m /tmp/models/llama3-8b-Q4_0.gguf -ngl 33 -c 2048 -np 1 "$@"
