"""Shared fixtures: one chDB engine per test session (chDB allows one data path per process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def chdb_client(chdb_path: Path) -> Any:
    """A clickhouse-connect client on the in-process chDB engine, shared by the session."""
    import clickhouse_connect

    return clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")


@pytest.fixture
def ch_database(chdb_client: Any) -> Iterator[str]:
    """A fresh, uniquely named database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    yield name
    chdb_client.command(f"DROP DATABASE IF EXISTS {name}")
