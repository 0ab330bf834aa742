"""The memory estimator: VRAM and layer placement of a model before it is loaded. Pure: no I/O.

    spec = ModelSpec.from_show(show_response)            # exact weights from the tensor list
    p = predict(spec, free=[24 * GiB, 24 * GiB], req=Request(num_ctx=32768, kv_type="q8_0"),
                engine="ollama", version="0.12.10")
    p.num_gpu, p.gpu_bytes, p.devices, p.fully_on_gpu, p.rule, p.ollama  # p.ollama: what Ollama prints
    n, p = max_num_gpu(spec, free, Request(num_ctx=131072), margin=1.05)  # the largest num_gpu that fits

Modules: spec (ModelSpec from /api/show), ggml (tensor and KV block sizes), ollama (Ollama's own Era A/B
estimate, as its log prints it, by release), llamacpp (what the runner allocates per device), placement (the
engine's rule: which GPUs, which layers, and the prediction), versions (what changes with Ollama's version).
It knows no particular model and imports nothing from the simulator or the validation. Its checks against
reality live outside the product, in the top-level `validation` package (`python -m validation.public_logs`,
`python -m validation.realgpu`).
"""

from tuner.estimate.placement import ENGINES, Device, Prediction, Request, max_num_gpu, predict
from tuner.estimate.spec import ModelSpec, SpecError

__all__ = ["ENGINES", "Device", "ModelSpec", "Prediction", "Request", "SpecError", "max_num_gpu", "predict"]
