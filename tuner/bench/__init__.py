"""The search benchmark: how well each search strategy finds the true speed/memory Pareto front.

    python -m tuner.bench_search --scenarios tuner/bench/scenarios.toml --budget 40 --seeds 10

Modules: scenarios (the TOML file of situations), truth (the noise-free front, by exhaustive evaluation of
the simulator's core), grid (the llama-bench-style sweep as an Optuna sampler), run (one study per
(scenario, strategy, seed) through the real study code against an in-process simulator, in parallel),
metrics (hypervolume ratio, trials to 99% of the best, simulated time), table (the Markdown report).
"""
