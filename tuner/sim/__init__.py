"""An Ollama-compatible simulator with simulated GPUs, for testing autotune without a GPU or Ollama.

    from tuner.sim import SimServer, Simulation

    with SimServer(gpus="2x24GiB", host_ram="64GiB", seed=0, local="all") as sim:
        ollama.Client(host=sim.url).generate("llama3.1:8b", "hi", options={"num_predict": 16})

    sim = Simulation("8xA800-80GB", host_ram="1TiB", version="0.5.7", noise=0)   # the pure core
    p = sim.plan("deepseek-r1:671b-q8_0", num_gpu=43)
    sim.speed(p, prompt_tokens=512, depth_tokens=0).decode_tok_s

Modules: hardware (cards, host), arch + quant + catalog + modelinfo (models, their GGUF tensors, what
/api/show says), versions (what changes by Ollama release), memory (Ollama's estimate), runner (what
llama.cpp really allocates), placement + core (Simulation.plan / .speed), perf (the speed model), power
(the GPUs' power, heat, clocks and energy on the simulated clock, and the throttle/drift faults),
scheduler (loaded runners, reload rules, keep-alive), registry (local models), options, generation,
api (the endpoints: apirequest, apimodels, apisim), server (HTTP), calibrate (python -m
tuner.sim.calibrate).
"""

from tuner.hardware import GpuSpec, parse_bytes, parse_gpus
from tuner.sim.catalog import CATALOG_NAMES, DEFAULT_TAGS, ModelFile, lookup
from tuner.sim.core import Simulation
from tuner.sim.hardware import HostSpec, make_host
from tuner.sim.perf import Speed
from tuner.sim.placement import Placement
from tuner.sim.server import SimServer

__all__ = [
    "CATALOG_NAMES",
    "DEFAULT_TAGS",
    "GpuSpec",
    "HostSpec",
    "ModelFile",
    "Placement",
    "SimServer",
    "Simulation",
    "Speed",
    "lookup",
    "make_host",
    "parse_bytes",
    "parse_gpus",
]
