#!/bin/sh
# autotune pick: Fastest for /tmp/models/llama3-8b-Q4_0.gguf
# study 'h100-llama3-8b', trial #0: Tied within noise with 2 other configs; your current setting is one of them, so it stays.
# measured: decode 289.4 (280.3-298.6) tok/s (95% interval, 3 runs), prefill 6804.6 tok/s, TTFT 0.02 s, peak VRAM 5.77 GiB (nvml), 100% of the model on the GPU
# on NVIDIA H100 80GB HBM3 79.65 GiB; llama-server 0.5.0-dev (build 0, commit 0c1e570)
# num_gpu is not set: the engine places the layers itself, as it did when measured
exec /tmp/autotune-cache/llama.cpp/0.3.36-cuda/bin/llama-server -m /tmp/models/llama3-8b-Q4_0.gguf -c 8192 -np 1 --flash-attn on --cache-type-k f16 --cache-type-v f16 "$@"
