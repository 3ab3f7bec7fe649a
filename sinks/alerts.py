"""Alerting consumer: tail lineage.violations (and containments), print them, POST them to a webhook."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from lineage import codec
from lineage.config import Settings
from lineage.model import Containment, Violation

log = logging.getLogger("lineage.alerts")


def violation_json(v: Violation) -> dict[str, Any]:
    """The JSON body sent to webhooks (the Avro record, enums as strings)."""
    return v.to_record()


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    retries: int = 5,
    timeout: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST ``body``; retry with exponential backoff on errors and 5xx; True when accepted."""
    data = json.dumps(body, sort_keys=True).encode()
    delay = 0.2
    for attempt in range(1, retries + 1):
        req = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if 200 <= resp.status < 300:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                log.error("webhook rejected violation with HTTP %d; not retrying", exc.code)
                return False
            log.warning("webhook HTTP %d (attempt %d/%d)", exc.code, attempt, retries)
        except (urllib.error.URLError, OSError) as exc:
            log.warning("webhook unreachable (attempt %d/%d): %s", attempt, retries, exc)
        sleep(delay)
        delay = min(delay * 2, 5.0)
    return False


class AlertTail:
    """Consumes violations and containments and hands each to ``on_violation``/``on_containment``."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        group: str | None = None,
        from_beginning: bool = False,
    ) -> None:
        self.topics = settings.topics
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group or f"{settings.topic_prefix}-alerts",
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": True,
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                "fetch.wait.max.ms": settings.fetch_wait_ms,
            }
        )
        self.consumer.subscribe([self.topics.violations, self.topics.control])
        self._violation = codec.load("violation")
        self._containment = codec.load("containment")

    def poll(self, timeout: float) -> list[Violation | Containment]:
        out: list[Violation | Containment] = []
        for m in self.consumer.consume(500, timeout):
            value = m.value()
            if m.error() or value is None:
                continue
            if m.topic() == self.topics.violations:
                out.append(Violation.from_record(self._violation.decode_body(value)))
            else:
                out.append(Containment.from_record(self._containment.decode_body(value)))
        return out

    def close(self) -> None:
        self.consumer.close()
