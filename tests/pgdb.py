"""A fresh PostgreSQL database per test, on the server that scripts/postgres started.

    pg_storage   a fixture: the URL of a new, empty database (dropped after the test)

The server's URL comes from $AUTOTUNE_TEST_POSTGRES (scripts/postgres start prints it; .ci/run exports it).
Without it the test is skipped, saying why, unless AUTOTUNE_REQUIRE_POSTGRES=1 (CI), where it fails: a
missing PostgreSQL can never pass as a skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest


def require_postgres() -> str:
    url = os.environ.get("AUTOTUNE_TEST_POSTGRES", "")
    if url:
        return url
    message = (
        "no PostgreSQL for the fleet tests: set AUTOTUNE_TEST_POSTGRES to the URL that "
        "'scripts/postgres start' prints"
    )
    if os.environ.get("AUTOTUNE_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " (AUTOTUNE_REQUIRE_POSTGRES=1: PostgreSQL must run here)")
    pytest.skip(message)


@pytest.fixture
def pg_storage() -> Iterator[str]:
    import sqlalchemy  # noqa: PLC0415

    base = require_postgres()
    name = "t_" + secrets.token_hex(6)
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        head, _, _ = base.rpartition("/")
        yield f"{head}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
