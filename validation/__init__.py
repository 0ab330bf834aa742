"""The memory estimator (tuner.estimate) checked against reality. Not part of the product: autotune never
imports it, and it is not installed with autotune; run it from a checkout.

    python -m validation.public_logs --out reports/memory-validation.md   # public Ollama logs (../shared/data)
    python -m validation.realgpu --out reports/memory-h100.md             # a real H100 study

    public_logs.py    runs every check and writes the page
    logrows.py        one check per usable CSV row (one function per row), and why the others cannot be used
    logdata.py        the CSV, its printed sizes, and what a check compares
    public_models.py  ModelSpecs of the models in the logs, built from public hyper-parameters (tuner.models)
    realgpu.py        the H100 study in reports/examples/h100-llama3-8b, predicted and set beside NVML's peak
"""
