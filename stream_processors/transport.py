"""faust's aiokafka transport with a configurable consumer fetch wait (faust hard-codes 1500 ms)."""

from __future__ import annotations

from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "lineagekafka"
FETCH_WAIT_MS = {"value": 50}


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # An empty fetch is held for about half of this on the embedded broker: every hop pays it.
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS["value"]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Use with broker URLs ``lineagekafka://host:port``."""

    Consumer = _Consumer


def install(fetch_wait_ms: int) -> str:
    """Register the transport and set the fetch wait; returns the URL scheme to use."""
    FETCH_WAIT_MS["value"] = fetch_wait_ms
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
    return SCHEME
