from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackgate import _boundary

# The protocol receivers' fixtures (webhook_receiver, kissmetrics_receiver, matomo_receiver) for every test.
pytest_plugins = ("sinks",)


@pytest.fixture(autouse=True)
def _raise_internal_errors() -> Iterator[None]:
    """In tests trackgate's own faults fail the test instead of being logged and swallowed."""
    _boundary.RAISE_INTERNAL = True
    yield
    _boundary.RAISE_INTERNAL = False


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TRACKGATE_* variable leaks in from the machine; spool and store live in the test's folder."""
    for name in list(os.environ):
        if name.startswith("TRACKGATE_") and not name.startswith("TRACKGATE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRACKGATE_SPOOL_PATH", str(tmp_path / "spool.sqlite3"))
    monkeypatch.setenv("TRACKGATE_STORE_URL", f"sqlite:///{tmp_path / 'events.sqlite3'}")


DEFAULT_POSTGRES_URL = "postgresql://trackgate:trackgate@127.0.0.1:5432/trackgate"  # what .ci/setup creates


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server .ci/setup starts; locally skipped when there is none, in CI a failure."""
    url = os.environ.get("TRACKGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {url} is unreachable in CI ({exc}): .ci/setup should have started it")
        pytest.skip(f"no PostgreSQL at {url} ({exc})")
    return url
