import pytest

from tuner.config import MeasureSettings, StudyConfig, ctx_ladder, parse_bytes, parse_quant_list, slug
from tuner.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20GiB", 20 * 1024**3),
        ("24GB", 24 * 10**9),
        ("512MiB", 512 * 1024**2),
        ("1.5TiB", int(1.5 * 1024**4)),
        ("1000", 1000),
        ("20G", 20 * 1024**3),
    ],  # a bare letter is binary, as --gpus 20G in the simulator
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["20 parsecs", "", "GiB", "-3GiB", "0GiB"])
def test_parse_bytes_rejects_with_the_value_quoted(text):
    with pytest.raises(ConfigError, match="--vram-limit"):
        parse_bytes(text, "--vram-limit")


def test_ctx_ladder_powers_of_two_capped_by_trained_and_max():
    assert ctx_ladder(131072) == [2048, 4096, 8192, 16384, 32768, 65536, 131072]
    assert ctx_ladder(163840, max_ctx=32768) == [2048, 4096, 8192, 16384, 32768]
    assert ctx_ladder(131072, max_ctx=20000, min_ctx=5000) == [8192, 16384]
    with pytest.raises(ConfigError, match="min-ctx"):
        ctx_ladder(4096, min_ctx=8192)


def test_quant_list_and_slug():
    assert parse_quant_list("q4_K_M, q8_0,fp16") == ["q4_K_M", "q8_0", "fp16"]
    with pytest.raises(ConfigError, match="q4 K"):
        parse_quant_list("q4 K")
    assert slug("deepseek-r1:32b") == "deepseek-r1-32b"
    assert slug("/models/My Model-Q4_K_M.gguf") == "my-model-q4_k_m"


def test_study_config_rejects_bad_budget_and_depth():
    base = dict(model="m", tags=("m",), engine="ollama", storage="sqlite://", study_name="s")
    with pytest.raises(ConfigError, match="--budget 0"):
        StudyConfig(budget=0, **base)
    with pytest.raises(ConfigError, match="--depth"):
        StudyConfig(budget=3, measure=MeasureSettings(depth=1.5), **base)
