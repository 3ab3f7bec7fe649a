"""Route the CLI's ClickHouse queries through a running ``lineage up`` that owns the chDB directory.

``open_client(settings)`` returns a client with the part of clickhouse-connect's interface the CLI
uses (``query``, ``query_row_block_stream``, ``database``). If ``<data dir>/console.json`` names a
live process, queries go to its ``/api/cli/query`` (read only); otherwise chDB is opened here, and
a lock held by some other process is reported with that process and what to do.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.config import Settings
from lineage.errors import LineageError

LOCK_NAME = "console.json"


class ServedElsewhere(LineageError):
    """The data directory is owned by another process and the query cannot be routed to it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def served_by(settings: Settings) -> dict[str, Any] | None:
    """The live ``lineage up`` serving this data directory, from its lock file (None if none)."""
    if settings.clickhouse_url:
        return None
    path = settings.data_dir / LOCK_NAME
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    if pid <= 0 or pid == os.getpid() or not _pid_alive(pid):
        return None
    return info


def refuse_if_served(settings: Settings) -> None:
    """Raise ServedElsewhere if a live ``lineage up`` already serves this data directory."""
    info = served_by(settings)
    if info is not None:
        raise ServedElsewhere(
            f"{settings.data_dir} is already served by `lineage up` (pid {info['pid']}) at "
            f"{info.get('url')}; stop it first (kill -INT {info['pid']}) or use another --data-dir"
        )


def _decode(v: Any) -> Any:
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if isinstance(v, dict):
        if "$b" in v:
            return base64.b64decode(v["$b"])
        if "$dt" in v:
            return dt.datetime.fromisoformat(v["$dt"])
        if "$d" in v:
            return dt.date.fromisoformat(v["$d"])
        if "$m" in v:
            return {_decode(k): _decode(x) for k, x in v["$m"]}
    return v


@dataclass
class RemoteResult:
    column_names: list[str]
    result_rows: list[list[Any]]


class RemoteClient:
    """A clickhouse-connect look-alike that sends each query to the running console."""

    def __init__(self, url: str, token: str, pid: int, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.pid = pid
        self.timeout = timeout
        self.database = ""

    def query(
        self,
        query: str,
        parameters: Any = None,
        settings: Any = None,
        column_formats: dict[str, str] | None = None,
    ) -> RemoteResult:
        body = json.dumps(
            {"sql": query, "parameters": parameters, "column_formats": column_formats}
        ).encode()
        req = urllib.request.Request(
            self.url + "/api/cli/query",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            with contextlib.suppress(ValueError):
                detail = str(json.loads(detail).get("detail", detail))
            raise LineageError(f"via `lineage up` (pid {self.pid}): {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServedElsewhere(
                f"the data directory is held by `lineage up` (pid {self.pid}) but {self.url} does "
                f"not answer ({exc}); wait for it, or stop it (kill -INT {self.pid}) and retry"
            ) from None
        return RemoteResult(doc["column_names"], [_decode(r) for r in doc["result_rows"]])

    @contextlib.contextmanager
    def query_row_block_stream(
        self,
        query: str,
        parameters: Any = None,
        settings: Any = None,
        column_formats: dict[str, str] | None = None,
    ) -> Iterator[Iterator[list[list[Any]]]]:
        result = self.query(query, parameters, settings, column_formats)
        yield iter([result.result_rows] if result.result_rows else [])

    def close(self) -> None:
        pass


def _lock_holder(path: Path) -> str:
    """Which process has files under ``path`` open (best effort), as 'pid N (command)'."""
    try:
        import psutil
    except ImportError:
        return "another process"
    target = str(path.resolve())
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            for f in proc.open_files():
                if f.path.startswith(target):
                    cmd = " ".join(proc.info["cmdline"] or [])[:120]
                    return f"pid {proc.info['pid']} ({cmd})"
    return "another process"


def open_client(settings: Settings) -> Any:
    """A client for the CLI: through a running ``lineage up`` when it owns the data directory."""
    info = served_by(settings)
    if info is not None:
        return RemoteClient(str(info["url"]), str(info["token"]), int(info["pid"]))
    from sinks.clickhouse import open_client as open_local

    try:
        return open_local(settings)
    except Exception as exc:
        if settings.clickhouse_url or "lock" not in str(exc).lower():
            raise
        holder = _lock_holder(settings.chdb_path)
        raise ServedElsewhere(
            f"chDB at {settings.chdb_path} is locked by {holder}, which does not route queries "
            "(only `lineage up` does); wait for it to finish or stop it, then retry"
        ) from None
