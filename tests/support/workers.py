"""``python -m mesh worker`` processes as an operator runs them, and fleets of them.

- :class:`MeshWorker` starts, stops, kills and restarts one worker and reads its ``/readyz``,
  ``/metrics`` and log.
- :func:`start_workers` starts a fleet's workers; :func:`wait_stable` waits until each is
  ready and owns partitions; :func:`wait_for_owner` until one of them follows a source.
- :func:`start_following_fleet` is a broker of its own and a fleet following Directus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from mesh_tooling.dev.process import ManagedProcess, free_port, port_is_free
from prometheus_client.parser import text_string_to_metric_families

from mesh.errors import StackError
from tests.support.auth import bearer, worker_env
from tests.support.services import own_broker
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.fixtures.directus import DirectusHandle


@dataclass
class Answer:
    """One HTTP answer: status, headers and the decoded JSON body."""

    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def worker(self) -> str | None:
        """The worker that read the answer (``X-Mesh-Worker``)."""
        return self.headers.get("X-Mesh-Worker")


@dataclass
class Metrics:
    """One scrape of a worker's ``/metrics``."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        """The samples of a Prometheus text exposition."""
        return cls(
            [
                (s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            ]
        )

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == want for k, want in labels.items())
        )


class MeshWorker:
    """One ``python -m mesh worker`` process of fleet ``app_id``, with its own state
    directory and web port; restartable with the same name, state directory and port."""

    def __init__(
        self, name: str, *, app_id: str, state_dir: Path, log_dir: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.app_id = app_id
        self.state_dir = state_dir
        self.port = free_port()
        offset = int(env.get("MESH_PEER_PORT_OFFSET", "0"))
        while offset and not port_is_free("127.0.0.1", self.port + offset):
            self.port = free_port()  # its peer port must be free too
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"worker-{app_id}-{name}.log"
        self.env = {
            **worker_env(),  # overridden by env (e.g. MESH_AUTH=off)
            **env,
            "MESH_APP_ID": app_id,
            "MESH_WORKER_NAME": name,
            "MESH_STATE_DIR": str(state_dir),
            "MESH_WEB_PORT": str(self.port),
        }
        self.proc: ManagedProcess | None = None
        """The process of the current (or last) run."""
        self._log_from = 0
        """Where this run's lines start in the log (restarts append to it)."""

    @property
    def running(self) -> bool:
        """True while the current run has not exited."""
        return self.proc is not None and self.proc.running

    async def start(self) -> None:
        """Start the process (not waiting for it to be ready)."""
        assert not self.running, f"{self.name} already runs"
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = ManagedProcess(
            f"mesh worker {self.name}",
            [sys.executable, "-m", "mesh", "worker"],
            log_path=self.log_path,
            env=self.env,
        )
        await self.proc.start()

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until ``/readyz`` answers 200 (joined the group, tables recovered)."""
        assert self.proc is not None

        async def ready() -> bool:
            return (await self._get("/readyz"))[0] == 200

        try:
            await self.proc.wait_ready(ready, timeout)
        except StackError as exc:
            errors = "\n".join(self.errors()[:5]) or "(none)"
            raise AssertionError(
                f"worker {self.name} is not ready; errors it logged:\n{errors}\n{exc}"
            ) from None

    def run_log(self) -> str:
        """Everything this run of the worker logged."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_from)
            return log.read().decode(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """This run's log lines as the JSON objects they are (``MESH_LOG_FORMAT=json``, the
        default); a line that is not one fails the test."""
        found = []
        for line in self.run_log().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{self.name} logged a non-JSON line: {line!r}") from None
        return found

    def errors(self) -> list[str]:
        """The error and critical lines this run of the worker logged, one line each (a JSON
        line shortened to its level, logger, message and exception)."""
        found = []
        for line in self.run_log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("level") in ("error", "critical"):
                        found.append(_readable(record))
                    continue
            if re.search(r"\[(error|critical) *\] ", line, re.IGNORECASE):  # a console line
                found.append(line)
        return found

    async def kill(self) -> None:
        """SIGKILL: no shutdown of any kind (the process group, as a crash would)."""
        assert self.proc is not None
        await self.proc.kill()

    async def stop(self) -> None:
        """SIGTERM and wait for a clean exit (SIGKILL after 30 s)."""
        if self.proc is not None:
            await self.proc.stop(grace=30)

    def wipe(self) -> None:
        """Delete the worker's local state (its RocksDB tables)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)

    async def get(self, path: str) -> Answer:
        """``GET path`` on this worker (a JSON body decoded)."""
        timeout = aiohttp.ClientTimeout(total=15)
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=bearer()) as http,
            http.get(self.base + path) as resp,
        ):
            text = await resp.text()
            ctype = resp.content_type
            body = await resp.json() if ctype == "application/json" else text
            return Answer(resp.status, dict(resp.headers), body)

    async def metric(self, name: str, **labels: str) -> float:
        """The value of the one sample of ``/metrics`` with exactly ``labels`` (0 when
        absent)."""
        text = (await self.get("/metrics")).body
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in str(text).splitlines():
            head, _, value = line.rpartition(" ")
            sample, _, rest = head.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if sample == name and got == wanted:
                return float(value)
        return 0.0

    async def metrics(self) -> Metrics:
        """One scrape of ``/metrics`` (it must answer 200)."""
        status, text = await self._get("/metrics")
        assert status == 200, f"{self.name} /metrics answered {status}: {text[:200]}"
        return Metrics.parse(text)

    async def source_state(self, source: str = "directus") -> int:
        """``dictamesh_source_state`` of ``source``: 0 not polled here, 1 snapshot,
        2 following, 3 backing off."""
        return int((await self.metrics()).value("dictamesh_source_state", source=source))

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the worker's log."""
        return self.proc.log_tail(lines) if self.proc else "(not started)"

    async def _get(self, path: str) -> tuple[int, str]:
        # Shorter than get()'s: readiness and metrics are polled, a hung answer is a miss.
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=bearer()) as http,
            http.get(self.base + path) as resp,
        ):
            return resp.status, await resp.text()


def _readable(record: Mapping[str, Any]) -> str:
    """A JSON log line as one line for people: level, logger, message, the exception."""
    text = f"[{record.get('level')}] {record.get('logger')}: {record.get('message')}"
    for exc in record.get("exception") or ():
        text += f" ({exc.get('exc_type')}: {exc.get('exc_value')})"
    return text


async def start_workers(
    cleanup: contextlib.AsyncExitStack, workers: Sequence[MeshWorker]
) -> list[MeshWorker]:
    """Start ``workers`` one after the other, each stopped by ``cleanup``; not waiting
    for them to be ready."""
    for worker in workers:
        await worker.start()
        cleanup.push_async_callback(worker.stop)
    return list(workers)


async def wait_stable(
    workers: Sequence[MeshWorker], *, timeout: float = 90.0, interval: float = 0.1
) -> None:
    """Wait until every worker is ready and actively owns partitions (keys on each)."""
    seen: dict[str, Any] = {}

    async def stable() -> bool:
        for worker in workers:
            try:
                answer = await worker.get("/readyz")
            except (aiohttp.ClientError, TimeoutError) as exc:
                seen[worker.name] = type(exc).__name__
                return False
            seen[worker.name] = answer.body
            if answer.status != 200 or not answer.body["active_partitions"]:
                return False
        return True

    await wait_until(
        stable, timeout=timeout, what=lambda: f"a stable fleet: {seen}", interval=interval
    )


async def states(workers: Sequence[MeshWorker], source: str = "directus") -> dict[str, int]:
    """The source's state on each running worker, by worker name."""
    return {w.name: await w.source_state(source) for w in workers if w.running}


async def wait_for_owner(
    workers: Sequence[MeshWorker], *, timeout: float = 90.0, source: str = "directus"
) -> MeshWorker:
    """Wait until exactly one worker polls ``source`` and follows its feed (state 2,
    the snapshot done); return it."""
    seen: dict[str, int] = {}

    async def one_follows() -> bool:
        nonlocal seen
        try:
            seen = await states(workers, source)
        except (aiohttp.ClientError, TimeoutError):
            return False
        active = [s for s in seen.values() if s != 0]
        return active == [2]

    await wait_until(
        one_follows,
        timeout=timeout,
        what=lambda: f"exactly one worker following source {source!r}; states {seen}",
        interval=0.25,
    )
    return next(w for w in workers if seen.get(w.name) == 2)


async def start_following_fleet(
    cleanup: contextlib.AsyncExitStack,
    *,
    app_id: str,
    root: Path,
    names: Sequence[str],
    directus: DirectusHandle,
    registry_url: str,
    partitions: int,
    env: Mapping[str, str] | None = None,
) -> list[MeshWorker]:
    """A broker of their own and workers ``names`` following ``directus``: started (stopped
    by ``cleanup``), ready, one of them owning the source, and every one owning partitions.
    ``env`` adds to their environment (e.g. ``MESH_DATABASE_URL`` for the mirror)."""
    bootstrap = await own_broker(cleanup, root / "logs")
    env = {
        "MESH_BROKER_URL": f"kafka://{bootstrap}",
        "MESH_SCHEMA_REGISTRY_URL": registry_url,
        "MESH_DIRECTUS_URL": directus.url,
        "MESH_DIRECTUS_TOKEN": directus.service_token,
        "MESH_DIRECTUS_WRITE_TOKEN": directus.saga_token,
        "MESH_TOPIC_PARTITIONS": str(partitions),
        "MESH_REBALANCE_TIMEOUT_S": "3",
        "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
        **(env or {}),
    }
    workers = await start_workers(
        cleanup,
        [
            MeshWorker(name, app_id=app_id, state_dir=root / name, log_dir=root / "logs", env=env)
            for name in names
        ],
    )
    await asyncio.gather(*(w.wait_ready() for w in workers))
    await wait_for_owner(workers)
    await wait_stable(workers, timeout=90, interval=0.25)
    return workers
