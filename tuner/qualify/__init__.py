"""Overnight hardware qualification (`autotune qualify studies/<plan>.toml`): a plan of models run unattended,
each a study then a soak at its recommended config, judged against the plan's criteria, summarised in
reports/<plan>/. plan: the file and its checks; setup: the engine and the models' descriptions; runner: the
night, resumable; soak and soakstats: the soak and what its series say; criteria: the verdicts; state: what
persists between runs; summary: the morning's files; compare: against an earlier qualification."""
