"""The core package imports no transport, store, web framework or CLI toolkit: an auditor installs only it."""

import subprocess
import sys

FORBIDDEN = (
    "faust",
    "mode",
    "confluent_kafka",
    "aiokafka",
    "clickhouse_connect",
    "chdb",
    "typer",
    "rich",
    "fastapi",
    "starlette",
    "uvicorn",
    "lineage_cli",
    "producers",
    "stream_processors",
    "sinks",
    "infra",
)

PROBE = """
import importlib, pkgutil, sys
import lineage
for info in pkgutil.iter_modules(lineage.__path__):
    importlib.import_module(f"lineage.{info.name}")
print("\\n".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_core_imports_no_transport_store_or_web_framework() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    leaked = sorted(set(out) & set(FORBIDDEN))
    assert leaked == [], f"lineage/ pulled in {leaked}; expected none of {FORBIDDEN}"
