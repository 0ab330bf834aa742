#!/bin/sh
# autotune pick: Balanced for /tmp/models/llama3-8b-Q4_0.gguf
# study 'q-h100-gpu-check-24bd3aaf-llama3-8b-q4_0', trial #0: The least VRAM fully on the GPU with at least your context (8192) within 10% of the fastest (it reaches 100%).
# measured: decode 293.6 (292.1-295.1) tok/s (95% interval, 3 runs), prefill 6760.4 tok/s, TTFT 0.02 s, peak VRAM 5.77 GiB (nvml), 100% of the model on the GPU, energy 1.61 J/token
# on NVIDIA H100 80GB HBM3 79.65 GiB; llama-server 0.1.2-dev (build 10488, commit b10488)
# num_gpu is not set: the engine places the layers itself, as it did when measured
exec /tmp/autotune-cache/llama.cpp/b10488-cuda/bin/llama-server -m /tmp/models/llama3-8b-Q4_0.gguf -c 8192 -np 1 "$@"
