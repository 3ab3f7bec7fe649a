"""Shared fixtures: one chDB engine per test session (chDB allows one data path per process)."""

from __future__ import annotations

import uuid
import weakref
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


_LEFT_OPEN: list[tuple[str, int]] = []


@pytest.fixture(autouse=True)
def _close_emitters_left_open(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Close every Emitter a test left open, and name the test in the summary.

    An emitter that outlives its test keeps its producer reconnecting to a broker that is gone
    once the session's broker stops, which filled the end of the suite's output with rdkafka
    "Connection refused" lines.
    """
    from producers.emitter import Emitter

    created: list[weakref.ref[Emitter]] = []
    original = Emitter.__init__

    def tracking_init(self: Emitter, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(weakref.ref(self))

    monkeypatch.setattr(Emitter, "__init__", tracking_init)
    yield
    left = [e for e in (ref() for ref in created) if e is not None and not e._closed]
    for emitter in left:
        emitter.close(timeout=1.0)
    if left:
        _LEFT_OPEN.append((request.node.nodeid, len(left)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _LEFT_OPEN:
        terminalreporter.section("emitters left open (closed at teardown)")
        for nodeid, n in _LEFT_OPEN:
            terminalreporter.write_line(f"{nodeid}: {n}")
