"""The simulator's model catalog: Ollama tags, their GGUF tensors with real per-tensor types (tuner.models).

Sizes come from summing exact ggml block sizes over the generated tensors; they land within a few percent of
what ollama.com lists (tests/sim/test_catalog.py checks them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tuner.estimate.ggml import tensor_bytes
from tuner.models import arch as A
from tuner.models.gguf import file_tensors

QUANTS = {"q4_K_M": "Q4_K_M", "q8_0": "Q8_0", "fp16": "F16", "q4_0": "Q4_0"}
STANDARD_QUANTS = ("q4_K_M", "q8_0", "fp16")

DEEPSEEK_TEMPLATE = (
    "{{- if .System }}{{ .System }}{{ end }}\n{{- range $i, $_ := .Messages }}\n"
    '{{- $last := eq (len (slice $.Messages $i)) 1}}\n{{- if eq .Role "user" }}<｜User｜>{{ .Content }}\n'
    '{{- else if eq .Role "assistant" }}<｜Assistant｜>{{ .Content }}'
    "{{- if not $last }}<｜end▁of▁sentence｜>{{- end }}\n{{- end }}\n"
    '{{- if and $last (ne .Role "assistant") }}<｜Assistant｜>{{- end }}\n{{- end }}'
)
LLAMA3_TEMPLATE = (
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>\n{{- end }}\n"
    "{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}"
    "{{ if $last }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{{ else }}<|eot_id|>{{ end }}\n"
    "{{- end }}"
)
GEMMA3_TEMPLATE = (
    "{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    '{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user\n{{ .Content }}<end_of_turn>\n'
    "{{ if $last }}<start_of_turn>model\n{{ end }}\n"
    '{{- else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}'
    "{{ if not $last }}<end_of_turn>\n{{ end }}\n{{- end }}\n{{- end }}"
)
CHATML_TEMPLATE = (
    "{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
    "<|im_start|>{{ .Role }}\n{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}\n"
    '{{- if and $last (ne .Role "assistant") }}<|im_end|>\n<|im_start|>assistant\n{{ end }}\n{{- end }}'
)
PHI4_TEMPLATE = (
    "{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
    "<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}{{ if not $last }}<|im_end|>{{ end }}\n"
    '{{- if and $last (ne .Role "assistant") }}<|im_end|><|im_start|>assistant<|im_sep|>{{ end }}\n{{- end }}'
)
MISTRAL_TEMPLATE = (
    '{{- range $i, $_ := .Messages }}\n{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST]\n'
    '{{- else if eq .Role "assistant" }}{{ .Content }}</s>\n{{- end }}\n{{- end }}'
)
CHATML_STOP = ["<|im_start|>", "<|im_end|>"]
DEEPSEEK_STOP = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]
LLAMA3_STOP = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@dataclass(frozen=True)
class Family:
    model: str  # "deepseek-r1"
    size: str  # "32b"
    arch: A.Arch
    infix: str  # "qwen-distill-" in "deepseek-r1:32b-qwen-distill-q8_0"
    family: str  # details.family
    template: str
    parameters: dict[str, Any]
    capabilities: tuple[str, ...]
    license: str
    basename: str
    tokenizer: tuple[str, str, int, int]  # model, pre, bos id, eos id
    aliases: tuple[str, ...] = ()  # extra names for the default tag ("llama3.1:latest")
    quants: tuple[str, ...] = STANDARD_QUANTS  # the tag suffixes published for this size
    default_quant: str = "q4_K_M"  # what the size's own tag ("mixtral:8x7b") points at
    is_70b: bool = False  # llama.cpp's LLM_TYPE_70B (80 blocks): more bits for attn_v in k-quants


FAMILIES: tuple[Family, ...] = (
    Family(
        "deepseek-r1",
        "32b",
        A.QWEN2_32B,
        "qwen-distill-",
        "qwen2",
        DEEPSEEK_TEMPLATE,
        {"stop": DEEPSEEK_STOP},
        ("completion", "thinking"),
        "MIT License\n\nCopyright (c) 2023 DeepSeek",
        "DeepSeek-R1-Distill-Qwen",
        ("gpt2", "deepseek-r1-qwen", 151646, 151643),
    ),
    Family(
        "llama3.1",
        "8b",
        A.LLAMA31_8B,
        "instruct-",
        "llama",
        LLAMA3_TEMPLATE,
        {"stop": LLAMA3_STOP},
        ("completion", "tools"),
        "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT",
        "Meta-Llama-3.1",
        ("gpt2", "llama-bpe", 128000, 128009),
        ("llama3.1:latest",),
    ),
    Family(
        "gemma3",
        "12b",
        A.GEMMA3_12B,
        "it-",
        "gemma3",
        GEMMA3_TEMPLATE,
        {"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95},
        ("completion", "vision"),
        "Gemma Terms of Use",
        "gemma-3",
        ("llama", "default", 2, 1),
    ),
    Family(
        "llama3.3",
        "70b",
        A.LLAMA33_70B,
        "instruct-",
        "llama",
        LLAMA3_TEMPLATE,
        {"stop": LLAMA3_STOP},
        ("completion", "tools"),
        "LLAMA 3.3 COMMUNITY LICENSE AGREEMENT",
        "Llama-3.3",
        ("gpt2", "llama-bpe", 128000, 128009),
        ("llama3.3:latest",),
    ),
    Family(
        "deepseek-r1",
        "671b",
        A.DEEPSEEK2_671B,
        "",
        "deepseek2",
        DEEPSEEK_TEMPLATE,
        {"stop": DEEPSEEK_STOP},
        ("completion", "thinking"),
        "MIT License\n\nCopyright (c) 2023 DeepSeek",
        "DeepSeek-R1",
        ("gpt2", "deepseek-v3", 0, 1),
    ),
    Family(
        "qwen2.5", "7b", A.QWEN25_7B, "instruct-", "qwen2", CHATML_TEMPLATE, {"stop": CHATML_STOP},
        ("completion", "tools"), "Apache License 2.0", "Qwen2.5", ("gpt2", "qwen2", 151643, 151645),
        ("qwen2.5:latest",),
    ),
    Family(
        "qwen2.5", "14b", A.QWEN25_14B, "instruct-", "qwen2", CHATML_TEMPLATE, {"stop": CHATML_STOP},
        ("completion", "tools"), "Apache License 2.0", "Qwen2.5", ("gpt2", "qwen2", 151643, 151645),
    ),
    Family(
        "qwen2.5", "32b", A.QWEN25_32B, "instruct-", "qwen2", CHATML_TEMPLATE, {"stop": CHATML_STOP},
        ("completion", "tools"), "Apache License 2.0", "Qwen2.5", ("gpt2", "qwen2", 151643, 151645),
    ),
    Family(
        "qwen2.5", "72b", A.QWEN25_72B, "instruct-", "qwen2", CHATML_TEMPLATE, {"stop": CHATML_STOP},
        ("completion", "tools"), "Qwen LICENSE AGREEMENT", "Qwen2.5", ("gpt2", "qwen2", 151643, 151645),
        is_70b=True,
    ),
    Family(
        "phi4", "14b", A.PHI4_14B, "", "phi3", PHI4_TEMPLATE, {"stop": ["<|im_start|>", "<|im_end|>", "<|im_sep|>"]},
        ("completion",), "MIT License", "Phi 4", ("gpt2", "dbrx", 100257, 100265), ("phi4:latest",),
    ),
    Family(
        "gemma3", "27b", A.GEMMA3_27B, "it-", "gemma3", GEMMA3_TEMPLATE,
        {"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95},
        ("completion", "vision"), "Gemma Terms of Use", "gemma-3", ("llama", "default", 2, 1),
    ),
    Family(
        "mistral-small", "24b", A.MISTRAL_SMALL_24B, "instruct-2501-", "llama", MISTRAL_TEMPLATE,
        {"temperature": 0.15}, ("completion", "tools"), "Apache License 2.0", "Mistral-Small-24B-Instruct-2501",
        ("gpt2", "tekken", 1, 2), ("mistral-small:latest",),
    ),
    Family(
        "mixtral", "8x7b", A.MIXTRAL_8X7B, "instruct-v0.1-", "llama", MISTRAL_TEMPLATE,
        {"stop": ["[INST]", "[/INST]"]}, ("completion", "tools"), "Apache License 2.0", "Mixtral-8x7B-Instruct-v0.1",
        ("llama", "default", 1, 2), ("mixtral:latest",), quants=("q4_0", *STANDARD_QUANTS), default_quant="q4_0",
    ),
    Family(
        "qwen3", "30b-a3b", A.QWEN3_30B_A3B, "", "qwen3moe", CHATML_TEMPLATE, {"stop": CHATML_STOP},
        ("completion", "tools", "thinking"), "Apache License 2.0", "Qwen3-30B-A3B",
        ("gpt2", "qwen2", 151643, 151645),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class ModelFile:
    """One GGUF file (one quantization of one model)."""

    tag: str  # canonical tag, e.g. "deepseek-r1:32b-qwen-distill-q4_K_M"
    family: Family
    ftype: str  # "Q4_K_M" | "Q8_0" | "F16"
    tensors: tuple[TensorInfo, ...]
    layer_bytes: tuple[int, ...]  # per repeating block
    layer_active_bytes: tuple[int, ...]  # read per generated token (MoE: dense part + used experts)
    layer_max_matrix_bytes: tuple[int, ...]  # largest weight matrix per block (op-offload staging)
    layer_active_params: tuple[int, ...]  # parameters a token multiplies through, per block
    output_bytes: int  # output_norm + output (token_embd when tied): Ollama's "output layer"
    token_embd_bytes: int
    vision_bytes: int
    other_bytes: int  # rope_freqs and the like
    metadata_bytes: int
    parameter_count: int
    # An imported GGUF (POST /api/blobs + /api/create with files): its own key/values and blob digest.
    kv: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    source_digest: str = ""

    @property
    def arch(self) -> A.Arch:
        return self.family.arch

    @property
    def file_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors) + self.metadata_bytes

    @property
    def digest(self) -> str:
        return sha256_hex("manifest:" + self.tag + self.source_digest)

    @property
    def blob_digest(self) -> str:
        return self.source_digest or sha256_hex("gguf:" + self.tag)

    @property
    def active_parameter_count(self) -> int:
        """Parameters touched per token (the whole model for dense models)."""
        a = self.arch
        if not a.is_moe:
            return self.parameter_count
        per_expert = 3 * a.embedding_length * a.expert_ff_length
        moe_layers = a.block_count - a.leading_dense_block_count
        return self.parameter_count - moe_layers * per_expert * (a.expert_count - a.expert_used_count)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _layer_of(name: str) -> int | None:
    if name.startswith("blk."):
        return int(name.split(".")[1])
    return None


@cache
def model_file(fam_index: int, quant: str) -> ModelFile:
    """The catalog file of family `fam_index` at quant tag suffix `quant` ('q4_K_M', 'q8_0', 'fp16')."""
    fam = FAMILIES[fam_index]
    return build_file(fam, QUANTS[quant], f"{fam.model}:{fam.size}-{fam.infix}{quant}")


def build_file(fam: Family, ftype: str, tag: str) -> ModelFile:
    """Generate the GGUF tensor list of `fam` at file type `ftype` ('Q4_K_M', 'Q8_0', 'F16', 'Q4_0')."""
    a = fam.arch
    tensors = [
        TensorInfo(name, gtype, shape, tensor_bytes(gtype, shape))
        for name, shape, gtype in file_tensors(a, ftype, is_70b=fam.is_70b or fam.size == "70b")
    ]
    meta = a.vocab_size * 24 + 64 * 1024  # tokenizer strings, types, merges, and the other keys
    return assemble_file(fam, ftype, tag, tensors, meta)


def assemble_file(
    fam: Family,
    ftype: str,
    tag: str,
    tensors: list[TensorInfo],
    metadata_bytes: int,
    *,
    kv: dict[str, Any] | None = None,
    source_digest: str = "",
) -> ModelFile:
    """A ModelFile from its tensor list: per-layer, output, embedding and vision bytes, parameter counts."""
    a = fam.arch
    layers = [0] * a.block_count
    active = [0] * a.block_count
    biggest = [0] * a.block_count
    active_params = [0] * a.block_count
    output = token = vision = other = params = 0
    for t in tensors:
        count = 1
        for d in t.shape:
            count *= d
        params += count
        layer = _layer_of(t.name)
        if layer is not None:
            layers[layer] += t.nbytes
            used, used_params = t.nbytes, count
            if "_exps." in t.name:
                used = t.nbytes * a.expert_used_count // a.expert_count
                used_params = count * a.expert_used_count // a.expert_count
            active[layer] += used
            active_params[layer] += used_params
            if len(t.shape) >= 2:
                biggest[layer] = max(biggest[layer], t.nbytes)
        elif t.name.startswith(("v.", "mm.")):
            vision += t.nbytes
        elif t.name == "token_embd.weight":
            token = t.nbytes
        elif t.name in ("output.weight", "output_norm.weight"):
            output += t.nbytes
        else:
            other += t.nbytes
    if a.tied_output:
        output += token
    return ModelFile(
        tag=tag,
        family=fam,
        ftype=ftype,
        tensors=tuple(tensors),
        layer_bytes=tuple(layers),
        layer_active_bytes=tuple(active),
        layer_max_matrix_bytes=tuple(biggest),
        layer_active_params=tuple(active_params),
        output_bytes=output,
        token_embd_bytes=token,
        vision_bytes=vision,
        other_bytes=other,
        metadata_bytes=metadata_bytes,
        parameter_count=params,
        kv=kv,
        source_digest=source_digest,
    )


def _build_names() -> tuple[dict[str, tuple[int, str]], tuple[str, ...]]:
    names: dict[str, tuple[int, str]] = {}
    defaults: list[str] = []
    for i, fam in enumerate(FAMILIES):
        default = f"{fam.model}:{fam.size}"
        defaults.append(default)
        names[default] = (i, fam.default_quant)
        for alias in fam.aliases:
            names[alias] = (i, fam.default_quant)
        for quant in fam.quants:
            names[f"{fam.model}:{fam.size}-{fam.infix}{quant}"] = (i, quant)
    return names, tuple(defaults)


CATALOG_NAMES, DEFAULT_TAGS = _build_names()


def normalize_name(name: str) -> str:
    """'Deepseek-R1:32B' -> 'deepseek-r1:32b'; 'llama3.1' -> 'llama3.1:latest'; registry prefix dropped."""
    text = name.strip()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    if ":" not in text.rsplit("/", 1)[-1]:
        text += ":latest"
    return text


# Files imported from uploaded GGUFs (sim/imported.py), by their tag "blob:sha256-<hex>". Shared by every
# simulator in the process: a tag is the file's content digest, so two servers never disagree on it.
_IMPORTED: dict[str, ModelFile] = {}


def register_file(mf: ModelFile) -> ModelFile:
    return _IMPORTED.setdefault(mf.tag, mf)


def lookup(name: str) -> ModelFile | None:
    """The catalog file behind an Ollama name (case-insensitive), or an imported file by its tag; or None."""
    if name in _IMPORTED:
        return _IMPORTED[name]
    key = normalize_name(name).lower()
    for known, (fam_index, quant) in CATALOG_NAMES.items():
        if known.lower() == key:
            return model_file(fam_index, quant)
    return None


def canonical_name(name: str) -> str | None:
    """The catalog's spelling of `name` ('llama3.1:8b-INSTRUCT-q8_0' -> 'llama3.1:8b-instruct-q8_0')."""
    key = normalize_name(name).lower()
    for known in CATALOG_NAMES:
        if known.lower() == key:
            return known
    return None
