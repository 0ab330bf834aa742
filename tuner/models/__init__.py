"""Model-architecture facts: public hyper-parameters, the GGUF tensor list and metadata keys they imply, and
llama.cpp's per-tensor quantization types. Pure data and pure functions.

Two applications need the same facts about real models: the simulator (tuner.sim), which serves them as
Ollama's /api/show, and the estimator's validation (the top-level `validation` package), which builds the
estimator's inputs for the models in public memory logs. Neither may own them: the validation must not
depend on the simulator it would then be checking against itself, and the estimator (tuner.estimate) must
stay a reader of /api/show that knows no particular model. So they live here, below both, and import
nothing from either.

    arch.py    Arch (the GGUF hyper-parameters), the architectures of the catalog models, tensor_shapes()
    quant.py   llama.cpp's ggml type for each tensor of a Q4_K_M / Q8_0 / F16 / Q4_0 file; Ollama's file types
    gguf.py    the `{arch}.*` metadata keys of an Arch, a file's typed tensor list, an /api/show-shaped dict
"""
