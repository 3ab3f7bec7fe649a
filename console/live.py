"""Live violations and containments: one Kafka tail fanned out to server-sent-event subscribers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lineage.model import Containment, Violation

PUBLIC_FIELDS = ("kind", "violation_type", "severity", "rule", "received_at")
"""What the public Governance Console may see of a live item: no workflow, event or explanation."""


@dataclass
class LiveHub:
    """Keeps the recent items and per-minute counts by type; pushes each item to every subscriber."""

    keep: int = 500
    recent: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=500)
    )
    per_minute: dict[int, collections.Counter[str]] = field(default_factory=dict)
    totals: collections.Counter[str] = field(default_factory=collections.Counter)
    _subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = field(
        default_factory=list
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: collections.OrderedDict[str, None] = field(default_factory=collections.OrderedDict)

    def publish(self, item: dict[str, Any]) -> None:
        """Record ``item`` and hand it to every subscriber (thread-safe).

        A processor that reprocesses after a restart re-publishes byte-identical violations
        (deterministic ids); each id is counted and pushed once.
        """
        with self._lock:
            key = str(item.get("id", ""))
            if key:
                if key in self._seen:
                    return
                self._seen[key] = None
                while len(self._seen) > 50_000:
                    self._seen.popitem(last=False)
        item.setdefault("received_at", time.time())
        minute = int(item["received_at"] // 60) * 60
        label = "CONTAINMENT" if item["kind"] == "containment" else item["violation_type"]
        with self._lock:
            self.recent.append(item)
            self.per_minute.setdefault(minute, collections.Counter())[label] += 1
            self.totals[label] += 1
            for old in [m for m in self.per_minute if m < minute - 24 * 3600]:
                del self.per_minute[old]
            subs = list(self._subs)
        for loop, queue in subs:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_put, queue, item)

    def publish_violation(self, v: Violation) -> None:
        self.publish(
            {
                "kind": "violation",
                "id": v.violation_id,
                "violation_type": str(v.violation_type),
                "severity": str(v.severity),
                "rule": v.rule,
                "workflow_id": v.workflow_id,
                "event_id": v.event_id,
                "explanation": v.explanation,
            }
        )

    def publish_containment(self, c: Containment) -> None:
        self.publish(
            {
                "kind": "containment",
                "id": "contain-" + c.violation_id,
                "violation_type": c.violation_type,
                "severity": "CRITICAL",
                "rule": "containment",
                "workflow_id": c.workflow_id,
                "event_id": c.event_id,
                "explanation": f"workflow contained after {c.violation_type}",
            }
        )

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        with self._lock:
            self._subs.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subs = [(lp, q) for lp, q in self._subs if q is not queue]

    def snapshot(self, public: bool) -> dict[str, Any]:
        with self._lock:
            recent = list(self.recent)[-100:]
            minutes = sorted(self.per_minute.items())[-60:]
            totals = dict(self.totals)
        return {
            "totals": totals,
            "per_minute": [{"minute": m, "counts": dict(c)} for m, c in minutes],
            "recent": [public_view(i) if public else i for i in recent],
        }


def public_view(item: dict[str, Any]) -> dict[str, Any]:
    """The publishable part of a live item."""
    return {k: item[k] for k in PUBLIC_FIELDS if k in item}


def _put(queue: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(item)


class AlertFeed:
    """A background thread tailing the violations and control topics into a ``LiveHub``."""

    def __init__(self, settings: Any, bootstrap: str, hub: LiveHub) -> None:
        from sinks.alerts import AlertTail

        self.hub = hub
        self.error = ""
        self.tail = AlertTail(
            settings, bootstrap, group=f"{settings.topic_prefix}-console-{uuid.uuid4().hex[:8]}"
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = self.tail.poll(0.2)
            except Exception as exc:
                self.error = str(exc)
                self._stop.wait(1.0)
                continue
            for item in items:
                if isinstance(item, Violation):
                    self.hub.publish_violation(item)
                else:
                    self.hub.publish_containment(item)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.tail.close()
