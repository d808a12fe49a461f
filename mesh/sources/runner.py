"""The poll loop of one source on the worker that owns it.

Each round: poll the adapter from the stored cursor, publish what it returned, wait for
Kafka's acknowledgements, and only then store the new cursor. A crash between publish and
store repeats events (same entity versions); nothing is ever skipped. Then the items the
dead-letter replays asked for (:mod:`mesh.sources.rereads`) are read again and published,
and only then are their requests deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from opentelemetry.trace import SpanKind

from mesh.errors import MeshError
from mesh.observability.tracing import tracer
from mesh.sources.base import SourceAdapter
from mesh.sources.metrics import AdapterState, SourceMetrics
from mesh.sources.publish import EventPublisher
from mesh.sources.rereads import RereadInbox
from mesh.tables.cursors import CursorStore

log = logging.getLogger(__name__)


class SourceRunner:
    """Runs one adapter until :meth:`stop`; one runner per owned source per worker."""

    def __init__(
        self,
        adapter: SourceAdapter,
        publisher: EventPublisher,
        cursors: CursorStore,
        metrics: SourceMetrics,
        *,
        rereads: RereadInbox | None = None,
        heads_every_s: float = 5.0,
    ) -> None:
        self.adapter = adapter
        self.rereads = rereads
        self.publisher = publisher
        self.cursors = cursors
        self.metrics = metrics
        self.name = adapter.spec.name
        self.interval = adapter.spec.poll_interval_ms / 1000
        self.heads_every_s = heads_every_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        adapter.should_stop = lambda: self.stopping
        adapter.on_retry = self._on_retry

    def _on_retry(self, error: MeshError, attempt: int, delay: float) -> None:
        log.warning("source %s: %s; retry %d in %.1f s", self.name, error, attempt, delay)
        self.metrics.errors.labels(self.name, type(error).__name__).inc()
        self.metrics.set_state(self.name, AdapterState.BACKOFF)
        self.metrics.backoff_seconds.labels(self.name).set(delay)

    @property
    def done(self) -> bool:
        """True when the loop has ended (stopped, or stopped by an error)."""
        return self._task is not None and self._task.done()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called; retry loops give up then."""
        return self._stopping.is_set()

    def start(self) -> None:
        """Start the loop in the background."""
        self._task = asyncio.create_task(self._run(), name=f"source:{self.name}")

    async def stop(self, timeout: float = 15.0) -> None:
        """Finish the current round (publish + cursor) and stop; cancel it after ``timeout``."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning("source %s did not stop within %.0f s; cancelling it", self.name, timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.metrics.set_state(self.name, AdapterState.STOPPED)

    async def _run(self) -> None:
        try:
            await asyncio.to_thread(self.publisher.prepare)
            await self.adapter.start()
            await self._loop()
        except asyncio.CancelledError:
            raise
        except MeshError as exc:
            # Not retriable (e.g. credentials rejected): say what to fix and stop polling.
            log.error("source %s stopped: %s", self.name, exc)
            self.metrics.errors.labels(self.name, type(exc).__name__).inc()
        except Exception:
            log.exception("source %s stopped by an unexpected error", self.name)
            self.metrics.errors.labels(self.name, "unexpected").inc()
        finally:
            self.metrics.set_state(self.name, AdapterState.STOPPED)
            await self.adapter.stop()

    async def _loop(self) -> None:
        cursor = self.cursors.get(self.name)
        next_heads = 0.0
        while not self.stopping:
            started = time.monotonic()
            poll_started_ns = time.time_ns()
            result = await self.adapter.poll(cursor)
            if result.events or result.dead_letters:
                # A trace starts with a poll that found changes (empty rounds make none).
                with (
                    tracer().start_as_current_span(
                        f"{self.name} poll", start_time=poll_started_ns,
                        attributes={"dictamesh.source": self.name,
                                    "dictamesh.events": len(result.events)},
                    ),
                    tracer().start_as_current_span(
                        "publish", kind=SpanKind.PRODUCER,
                        attributes={"messaging.system": "kafka",
                                    "messaging.operation.type": "send",
                                    "messaging.batch.message_count": len(result.events)},
                    ),
                ):  # fmt: skip
                    await self.publisher.publish(result.events, result.dead_letters)
            if result.cursor != cursor:
                self.cursors.set(self.name, result.cursor)
                cursor = result.cursor
            await self._reread()
            self.metrics.poll_seconds.labels(self.name).observe(time.monotonic() - started)
            self.metrics.set_state(self.name, result.state)
            self.metrics.backoff_seconds.labels(self.name).set(0)
            position = cursor.get("position") if cursor else None
            if isinstance(position, int):
                self.metrics.cursor.labels(self.name).set(position)
                if time.monotonic() >= next_heads:
                    next_heads = time.monotonic() + self.heads_every_s
                    await self._record_lag(position)
            if not result.more:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def _reread(self) -> None:
        """Publish the items re-read requests ask for, then delete the requests."""
        requests = self.rereads.pending(self.name) if self.rereads is not None else []
        if not requests:
            return
        assert self.rereads is not None
        found = await self.adapter.reread(requests)
        if found.events or found.dead_letters:
            await self.publisher.publish(found.events, found.dead_letters)
        await self.rereads.done(requests)
        log.info(
            "source %s: read %d items again (%d events, %d dead letters) for %s",
            self.name, len(requests), len(found.events), len(found.dead_letters),
            ", ".join(r.letter or r.key.decode() for r in requests),
        )  # fmt: skip

    async def _record_lag(self, position: int) -> None:
        try:
            heads = await self.adapter.heads()
        except MeshError:
            return  # the next round retries; lag stays at its last value meanwhile
        for collection, head in heads.items():
            self.metrics.head.labels(self.name, collection).set(head)
            self.metrics.lag.labels(self.name, collection).set(max(0, head - position))
