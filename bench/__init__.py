"""End-to-end and per-stage benchmarks of the lineage pipeline (``lineage bench``, ``python -m bench.stages``)."""
