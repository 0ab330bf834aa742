"""llama.cpp's llama-server as a Backend: one server process per loaded model variant.

Each load() starts `llama-server -m MODEL -ngl N -c CTX -np 1 ...` on a free loopback port and waits
for GET /health; unload_all() ends the process. num_gpu=AUTO leaves out -ngl (llama.cpp's own
placement, --fit on); an explicit num_gpu also passes `--fit off`, so the placement is exactly the one
asked for and a config that does not fit fails as OutOfMemory instead of being quietly shrunk.

What Ollama reports through /api/ps is read from the server's own log (../shared/ollama-api.md
section 8.3; since the log-verbosity rework these lines need `-lv 4`, which is passed when the build
lists it):

    load_tensors: offloaded 33/33 layers to GPU
    load_tensors:   CPU_Mapped model buffer size =   281.81 MiB
    load_tensors:        CUDA0 model buffer size =  4155.99 MiB
    llama_kv_cache:      CUDA0 KV buffer size =   512.00 MiB
    sched_reserve:      CUDA0 compute buffer size =   112.01 MiB
    sched_reserve:  CUDA_Host compute buffer size =    20.01 MiB

Buffers named CPU, CPU_Mapped, CPU_REPACK, ... or *_Host are host memory; the rest are device memory
(Ollama's Era C accounting). Even at full offload a CPU_Mapped model buffer remains (the token
embeddings stay on the host), so size_vram < size there too: full offload is
`layers_offloaded == block_count + 1`.

Generations go through POST /completion, streamed, greedy, with cache_prompt false (every repeat
re-processes the prompt) and ignore_eos (exactly n_predict tokens); the engine's own timings come from
the final chunk (`timings.prompt_n/prompt_ms/predicted_n/predicted_ms`). With no GPU, `pid` lets a
probe read the server's resident memory.

One module per concern:

    backend.py   LlamaServerBackend: load / residency / generate / unload, and the errors it raises
    process.py   the binary and its process: finding it, --help/--version, spawning, ports, stopping
    argv.py      rendering a trial's EngineOptions as the server's command line (for this build's flags)
    logs.py      reading the server's log: buffer sizes, offloaded layers, the cause of a failure
    client.py    HTTP to the running server (httpx): /health and the streamed /completion
    gguf.py      a GGUF file's metadata as ModelInfo (the `gguf` package)
"""

from tuner.backend.llamaserver.backend import ENGINE, LlamaServerBackend
from tuner.backend.llamaserver.gguf import quantization_name, read_model_info
from tuner.backend.llamaserver.logs import BufferSizes, is_memory_failure, parse_log
from tuner.backend.llamaserver.process import find_binary

__all__ = [
    "ENGINE",
    "BufferSizes",
    "LlamaServerBackend",
    "find_binary",
    "is_memory_failure",
    "parse_log",
    "quantization_name",
    "read_model_info",
]
