"""One real stack with demo data for every console test of the session (API and browser)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.stack import ConsoleStack, start_stack


@pytest.fixture(scope="session")
def console_stack(
    chdb_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    st = start_stack(chdb_client, tmp_path_factory.mktemp("console"), big_events=0)
    yield st
    st.stop()
