"""Sinks that write verified lineage to ClickHouse."""
