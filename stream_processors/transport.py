"""faust's aiokafka transport with the processor's consumer options (faust hard-codes a 1500 ms
fetch wait) and a resume hook; the options travel on the app, not in module globals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "lineagekafka"


@dataclass
class Options:
    """What the transport needs from the processor.

    ``fetch_wait_ms``: how long the broker may hold an empty fetch (every hop pays it).
    ``resume_offset``: where an input partition resumes after table recovery (None: faust's
    committed offset).
    ``recovery_end``: the end offsets table recovery reads to, for the changelog partitions it
    knows (the broker's ListOffsets answer for the others).
    """

    fetch_wait_ms: int = 50
    resume_offset: Callable[[Any], int | None] = lambda tp: None
    recovery_end: Callable[[Iterable[Any]], Mapping[Any, int]] | None = None


def options_of(app: Any) -> Options:
    opts = getattr(app, "transport_options", None)
    return opts if isinstance(opts, Options) else Options()


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka takes the wait only in its constructor, which faust calls with 1500 ms; the
        # embedded broker holds an empty fetch for about half of it.
        consumer._fetch_max_wait_ms = options_of(self.app).fetch_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def highwaters(self, *partitions: Any) -> Any:
        """End offsets for table recovery (faust's only caller), from ``Options.recovery_end``."""
        ends = dict(await super().highwaters(*partitions))
        recovery_end = options_of(self.app).recovery_end
        if recovery_end is not None and partitions:
            ends.update(await asyncio.to_thread(recovery_end, partitions))
        return ends

    async def perform_seek(self) -> None:
        """After table recovery, resume each input partition where its saved state ends.

        faust seeks to the committed offsets, which may be ahead of the recovered state (state is
        written after outputs, commits happen on their own timer). Seeking here, while the flow is
        still paused, avoids a mid-stream seek racing with records already fetched.
        """
        await super().perform_seek()
        resume = options_of(self.app).resume_offset
        for tp in self.assignment():
            offset = resume(tp)
            if offset is not None:
                await self.seek(tp, offset)


class Transport(faust_aiokafka.Transport):
    """Use with broker URLs ``lineagekafka://host:port``."""

    Consumer = _Consumer


def install() -> str:
    """Register the transport; returns the URL scheme to use."""
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
    return SCHEME
