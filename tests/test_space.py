import optuna

from tuner.space import Config, Space


def test_suggest_and_params_round_trip():
    space = Space(tags=("a:q4", "a:q8"), max_layers=33, ctx_ladder=(2048, 4096, 8192), tune_kv_cache=True)
    config = Config("a:q8", 20, 4096, None, "q8_0")
    trial = optuna.trial.FixedTrial(space.params(config))
    assert space.suggest(trial) == config
    assert space.size() == 2 * 34 * 3 * 3


def test_nearest_ctx_prefers_the_ladder_value_in_log_space():
    space = Space(tags=("a",), max_layers=10, ctx_ladder=(2048, 4096, 8192))
    assert space.nearest_ctx(4000) == 4096
    assert space.nearest_ctx(100000) == 8192
