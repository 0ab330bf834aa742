"""Credentials never leave the process: URLs are masked wherever they are shown or stored. Pure.

    mask_url("postgresql://tuner:pw@db/optuna")   -> "postgresql://tuner:***@db/optuna"
    remember_secrets_of(url)                       the password (and the user's token) of a URL the user gave
    redact(text)                                   every remembered secret and every URL password masked

The CLI remembers the secrets of --host and --storage before it touches anything, and redact() runs over
every line it prints (errors included: a driver's message may quote the URL) and over every log record.
What is stored (study attributes, reports) holds only masked URLs, so a study shared later leaks nothing.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

MASK = "***"
# scheme://user:password@ (the password part may be empty of '@', '/', whitespace and quotes)
_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<secret>[^@/\s'\"]+)@")
_QUERY_SECRETS = re.compile(
    r"(?P<head>[?&](?:password|passwd|pwd|token|secret|api_key|apikey)=)(?P<secret>[^&#\s'\"]+)", re.I
)
_SECRETS: set[str] = set()


def mask_url(url: str) -> str:
    """The URL with its password (userinfo and password-like query values) replaced by ***."""
    masked = _URL_CREDENTIALS.sub(lambda m: f"{m.group('head')}:{MASK}@", url)
    return _QUERY_SECRETS.sub(lambda m: f"{m.group('head')}{MASK}", masked)


def secrets_of(url: str) -> list[str]:
    """The secret parts of a URL (a password, a password-like query value), raw and percent-decoded."""
    found: list[str] = []
    for pattern in (_URL_CREDENTIALS, _QUERY_SECRETS):
        for match in pattern.finditer(url):
            found.append(match.group("secret"))
    no_scheme = url if "://" in url else "http://" + url
    try:
        password = urllib.parse.urlsplit(no_scheme).password
    except ValueError:
        password = None
    if password:
        found.append(password)
    out: list[str] = []
    for secret in found:
        for form in (secret, urllib.parse.unquote(secret)):
            if len(form) >= 3 and form not in out:  # a 1-2 character "secret" would mask half of every line
                out.append(form)
    return out


def remember_secrets_of(url: str | None) -> None:
    """From now on redact() masks the secrets of `url` wherever they appear."""
    if url:
        _SECRETS.update(secrets_of(url))


def redact(text: str) -> str:
    """`text` with URL passwords and every remembered secret masked."""
    text = mask_url(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in each record's message (its arguments merged in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is left to logging's own handling
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_filter() -> None:
    """Mask secrets in every handler of the root logger and of the libraries that log URLs."""
    flt = RedactingFilter()
    for name in ("", "optuna", "sqlalchemy", "httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(flt)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(flt)
