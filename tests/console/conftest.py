"""One real stack with demo data for every console test of the session (API and browser)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.stack import ConsoleStack, acquire_stack, release_stack


@pytest.fixture(scope="session")
def console_stack(
    chdb_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    yield acquire_stack(chdb_client, tmp_path_factory)
    release_stack()
