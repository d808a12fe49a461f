"""Which generation of the fleet's Kafka state the shared cache is filed under.

Redis outlives Kafka's state: a new cluster, topics reset, or the dev broker restarted
(it keeps everything in memory) leave Redis holding reads of data that no longer exists,
under the same app id. So every shared cache key carries the fleet generation
(:mod:`mesh.runtime.generation`: an id kept in Kafka, gone with its state), and a worker
uses Redis only while it knows the generation for certain:

* it reads the generation at start, and again whenever the group rebalances. A reset of
  Kafka's state always makes the group rebalance (the group is gone with it; a worker that
  survives a dev broker restart is told its member id is unknown and rejoins), and the
  group's next assignment waits for every member to have revoked — so by the time any
  worker serves the new assignment, every worker has begun to read again;
* until the read succeeds (Kafka down, or the topic missing where topics are managed),
  reads of other workers' keys go to their owners and nothing is stored in Redis, as if
  it had no Redis; invalidations wait for it (a change must reach the generation readers
  will look in), retrying with backoff and saying so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from mesh.errors import MeshError
from mesh.retry import RetryPolicy

log = logging.getLogger(__name__)

_RETRY = RetryPolicy(base_s=0.2, max_s=5.0)


class FleetGeneration:
    """The fleet generation as this worker knows it: :attr:`current` is ``None`` from a
    :meth:`check` until the read it starts (or a later one) has succeeded."""

    def __init__(
        self,
        read: Callable[[], Awaitable[str]],
        *,
        retry: RetryPolicy = _RETRY,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        """``read`` reads the generation from Kafka (raising on failure); ``on_change`` is
        called with a generation different from the one known before (once per change)."""
        self._read = read
        self._retry = retry
        self.on_change = on_change
        self.current: str | None = None
        self._last: str | None = None
        """The last generation read, kept while a new read is under way (for the log)."""
        self._epoch = 0
        self._known = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Forget the generation and read it again (in the background): called at start
        and whenever the group rebalances."""
        self._epoch += 1
        self.current = None
        self._known.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait(self) -> str:
        """The generation, once known."""
        while self.current is None:
            await self._known.wait()
        return self.current

    async def close(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            epoch = self._epoch
            try:
                generation = await self._read()
            except Exception as exc:  # whatever it is, Redis stays off and we retry
                delay = self._retry.delay(failures)
                failures += 1
                log.warning(
                    "fleet generation unknown (%s); until it is read this worker runs "
                    "without the shared cache (other workers' keys are read from their "
                    "owners, invalidations wait); retry %d in %.1f s",
                    exc, failures, delay,
                    exc_info=not isinstance(exc, MeshError),  # a bug: show where
                )  # fmt: skip
                await asyncio.sleep(delay)
                continue
            if epoch != self._epoch:
                continue  # a rebalance began while reading: what was read may predate it
            self._known_as(generation, failures)
            return

    def _known_as(self, generation: str, failures: int) -> None:
        changed = generation != self._last
        self.current = self._last = generation
        self._known.set()
        if changed:
            log.info(
                "fleet generation %s%s: the shared cache is used under it",
                generation, f" (after {failures} failed reads)" if failures else "",
            )  # fmt: skip
            if self.on_change is not None:
                self.on_change(generation)
