"""Errors of the sink."""

from __future__ import annotations

from lineage.errors import LineageError


class ClickHouseUnavailable(LineageError):
    """ClickHouse did not acknowledge an insert; the sink backs off and retries the same batch."""


class RejectedData(LineageError):
    """ClickHouse refused the data itself (it would refuse it again): quarantine, never retry."""
