"""Credentials in URLs are masked wherever they are shown or stored."""

from __future__ import annotations

import logging

import pytest

from tuner import redact as redact_module
from tuner.redact import RedactingFilter, mask_url, redact, remember_secrets_of, secrets_of


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://tuner:s3cret@db:5432/optuna", "postgresql://tuner:***@db:5432/optuna"),
        ("mysql+pymysql://u:p%40ss@host/db", "mysql+pymysql://u:***@host/db"),
        ("http://user:pw123@10.0.0.5:11434/ollama", "http://user:***@10.0.0.5:11434/ollama"),
        (
            "postgresql://db/optuna?password=hunter22&sslmode=require",
            "postgresql://db/optuna?password=***&sslmode=require",
        ),
        ("sqlite:///studies/autotune.db", "sqlite:///studies/autotune.db"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_a_remembered_secret_is_masked_anywhere_even_without_its_url(monkeypatch):
    monkeypatch.setattr(redact_module, "_SECRETS", set())
    remember_secrets_of("http://tuner:pa%24%24word9@gpu-box:11434")  # percent-encoded "pa$$word9"
    assert set(secrets_of("http://tuner:pa%24%24word9@gpu-box:11434")) == {"pa%24%24word9", "pa$$word9"}
    text = "driver said: authentication failed for pa$$word9 (pa%24%24word9)"
    assert "word9" not in redact(text)
    remember_secrets_of("user:xy@host")  # too short to mask safely: not remembered
    assert redact("xy marks the spot") == "xy marks the spot"


def test_log_records_are_masked():
    record = logging.LogRecord(
        "optuna", logging.ERROR, __file__, 1, "cannot open %s", ("postgresql://a:b0b0@h/d",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "cannot open postgresql://a:***@h/d"
