"""autotune: measure, don't guess, the fastest Ollama / llama.cpp settings that fit your GPUs."""

__version__ = "0.1.0"
