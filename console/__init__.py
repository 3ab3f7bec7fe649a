"""The lineage console: five surfaces on one JSON HTTP API (FastAPI, Jinja2, SSE)."""
