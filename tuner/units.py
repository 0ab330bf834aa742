"""Binary byte units, defined once for the whole project. Pure.

Ollama, llama.cpp and NVML all count memory in powers of two, and so does every figure autotune prints
("GiB"). Sizes typed by users go through tuner.config.bytes_of, which also knows the decimal units.
"""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
