"""Fault tests run on the integration fixtures: the session broker, per-test pipelines, chDB."""

from __future__ import annotations

from tests.integration.conftest import *  # noqa: F403 - the fixtures are the point
