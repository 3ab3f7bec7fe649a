"""faust's aiokafka transport with the processor's consumer options (faust hard-codes a 1500 ms
fetch wait) and a resume hook; the options travel on the app, not in module globals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
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


class SeekTargets:
    """Offsets input partitions were just sought back to, until the record there arrives.

    faust's fetch loop may still hold records it fetched before a seek; it delivers them after
    the seek and raises its read offset to theirs, and then drops the re-fetched records below
    as already read. Under a steady stream that repeats at every seek, and the partition never
    gets its skipped records back. Records of a partition with a target are therefore dropped
    until the target's own record comes, and faust's read offset is set back to it then.
    """

    def __init__(self) -> None:
        self.targets: dict[Any, int] = {}

    def set(self, tp: Any, offset: int) -> None:
        self.targets[tp] = offset

    def admit(self, tp: Any, offset: int) -> bool:
        target = self.targets.get(tp)
        if target is None:
            return True
        if offset != target:
            return False  # fetched before the seek
        del self.targets[tp]
        return True


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def seek_targets(self) -> SeekTargets:
        targets = self.__dict__.get("_lineage_seek_targets")
        if targets is None:
            targets = self.__dict__["_lineage_seek_targets"] = SeekTargets()
        return targets

    async def seek(self, partition: Any, offset: int) -> None:
        """Seek, and drop what was fetched before it until the record at ``offset`` arrives."""
        self.seek_targets.set(partition, offset)
        await super().seek(partition, offset)

    async def _seek(self, partition: Any, offset: int) -> None:
        # faust calls aiokafka's seek from this loop's thread while the consumer thread may be
        # inside fetched_records, which then deletes a partition's records the seek has already
        # deleted (KeyError, the worker crashes). The seek runs in the consumer's own thread.
        thread = self._thread

        async def seek_there() -> None:
            thread.seek(partition, offset)

        await thread.call_thread(seek_there)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        targets = self.seek_targets
        async for tp, message in super().getmany(timeout):
            reached = targets.targets.get(tp) == message.offset
            if targets.admit(tp, message.offset):
                if reached:
                    # A record fetched before the seek may have been mid-delivery when it came,
                    # and faust then raised its read offset past the target: put it back, or
                    # faust's fetch loop drops the target's record as already read.
                    self._read_offset[tp] = message.offset
                yield tp, message

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
        self.seek_targets.targets.clear()  # faust just sought every partition to its commit
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
