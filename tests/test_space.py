import optuna

from tuner.space import Config, Space


def test_suggest_and_params_round_trip():
    space = Space(tags=("a:q4", "a:q8"), max_layers=33, ctx_ladder=(2048, 4096, 8192), tune_kv_cache=True)
    config = Config("a:q8", 20, 4096, "on", "q8_0")  # a quantized KV cache needs flash attention on
    trial = optuna.trial.FixedTrial(space.params(config))
    assert space.suggest(trial) == config
    assert space.size() == 2 * 34 * 3 * 3


def test_flash_attention_is_only_searched_with_an_f16_kv_cache():
    space = Space(tags=("a",), max_layers=10, ctx_ladder=(2048,), tune_flash_attn=True, tune_kv_cache=True)
    for config in (
        Config("a", 5, 2048, "off", "f16"),
        Config("a", 5, 2048, "on", "f16"),
        Config("a", 5, 2048, "on", "q4_0"),
    ):
        assert space.suggest(optuna.trial.FixedTrial(space.params(config))) == config
    assert "flash_attn" not in space.params(Config("a", 5, 2048, "on", "q8_0"))
    assert space.size() == 11 * (2 + 2)


def test_nearest_ctx_prefers_the_ladder_value_in_log_space():
    space = Space(tags=("a",), max_layers=10, ctx_ladder=(2048, 4096, 8192))
    assert space.nearest_ctx(4000) == 4096
    assert space.nearest_ctx(100000) == 8192
