"""Waiting until a worker serves and its sources follow their change feeds.

A worker is ready (``/readyz``) once it has joined the group and recovered its tables, but
its sources first take a snapshot of every collection; writes made meanwhile land in that
snapshot, not as changes of their own. The stack says "ready", and benchmarks start
measuring, only once every source this fleet polls follows its feed
(``dictamesh_source_state`` 2 on the worker that owns it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence

import aiohttp

from mesh.errors import StackError

FOLLOWING = 2
_STATE = re.compile(r'^dictamesh_source_state\{source="([^"]+)"\} ([0-9.]+)$', re.M)


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text()


async def wait_until_following(
    worker_urls: Sequence[str],
    sources: Sequence[str],
    *,
    timeout: float = 180.0,
    say: Callable[[str], None] = print,
) -> float:
    """Wait until some worker of ``worker_urls`` is ready and every source in ``sources``
    follows its feed; return the seconds waited. :class:`StackError` saying what was still
    missing when ``timeout`` passes."""
    started = time.monotonic()
    deadline = started + timeout
    missing: set[str] = set(sources)
    ready = False
    told = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while True:
            following: set[str] = set()
            ready = False
            for url in worker_urls:
                base = url.rstrip("/")
                try:
                    status, _ = await _get(http, f"{base}/readyz")
                    ready = ready or status == 200
                    _, metrics = await _get(http, f"{base}/metrics")
                except (aiohttp.ClientError, TimeoutError):
                    continue
                following |= {s for s, v in _STATE.findall(metrics) if float(v) == FOLLOWING}
            missing = set(sources) - following
            if ready and not missing:
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                what = "no worker is ready" if not ready else f"sources {sorted(missing)}"
                raise StackError(
                    f"{what} after {timeout:.0f} s: see the worker log "
                    "(a source still taking its snapshot, or failing)"
                )
            if not told and ready:
                say(f"waiting for {', '.join(sorted(missing))} to finish the first snapshot")
                told = True
            await asyncio.sleep(0.5)
