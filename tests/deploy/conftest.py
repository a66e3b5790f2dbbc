"""Fixtures for the deployment tests: one private PostgreSQL cluster per session
(tests/server/pg_support.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.server.pg_support import PostgresCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    url = pg_cluster.new_database("deploy")
    yield url
    pg_cluster.drop_database(url)


# The package tests need the desktop app built with PyInstaller and the Linux package made from it
# (minutes): only `make test-package` runs them, after `make deb`.
collect_ignore = (
    [] if os.environ.get("MODELTRAIN_TEST_PACKAGE") == "1" else ["test_package.py", "test_deb.py"]
)
