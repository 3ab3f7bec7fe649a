"""faust's aiokafka transport with a configurable consumer fetch wait (faust hard-codes 1500 ms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "lineagekafka"
FETCH_WAIT_MS = {"value": 50}
RESUME_HOOK: dict[str, Callable[[Any], int | None]] = {}


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # An empty fetch is held for about half of this on the embedded broker: every hop pays it.
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS["value"]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """After table recovery, resume each input partition where its saved state ends.

        faust seeks to the committed offsets, which may be ahead of the recovered state (state is
        written after outputs, commits happen on their own timer). Seeking here, while the flow is
        still paused, avoids a mid-stream seek racing with records already fetched.
        """
        await super().perform_seek()
        hook = RESUME_HOOK.get("hook")
        if hook is None:
            return
        for tp in self.assignment():
            offset = hook(tp)
            if offset is not None:
                await self.seek(tp, offset)


class Transport(faust_aiokafka.Transport):
    """Use with broker URLs ``lineagekafka://host:port``."""

    Consumer = _Consumer


def install(fetch_wait_ms: int) -> str:
    """Register the transport and set the fetch wait; returns the URL scheme to use."""
    FETCH_WAIT_MS["value"] = fetch_wait_ms
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
    return SCHEME
