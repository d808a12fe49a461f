"""The batched changelog restore rebuilds RocksDB table partitions exactly as Faust's
record-by-record replay would: the last value of each key, deletes applied, the offset
reached recorded; an interrupted restore (a rebalance cancels it) resumes from there.

Changelogs live on the session's real broker; tables are real Faust RocksDB stores.
The end-to-end rebuild of a worker that lost its volume is in ``tests/catalog/test_rest.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.runtime import restore as restore_module
from mesh.runtime.kafka import KafkaConnection
from mesh.runtime.recovery import install_recovery_hooks
from mesh.runtime.restore import MIN_RECORDS, ChangelogRestore, Target, install_changelog_restore

PARTITIONS = 2
Changelog = dict[int, list[tuple[bytes, bytes | None]]]
"""Per partition, the records in offset order (``None``: a delete)."""


def _changelog(per_partition: int) -> Changelog:
    """Inserts, overwrites and deletes over a key space smaller than the records."""
    out: Changelog = {}
    for p in range(PARTITIONS):
        records: list[tuple[bytes, bytes | None]] = []
        for n in range(per_partition):
            key = b"p%d-k%d" % (p, n % (per_partition // 3))
            records.append((key, None if n % 7 == 6 else b"v%d" % n))
        out[p] = records
    return out


def _folded(records: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    for key, value in records:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


async def _produce(broker: str, changelog: Changelog) -> str:
    topic = f"restore-{uuid.uuid4().hex[:8]}-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value, key=key, partition=p)
            for p, records in changelog.items()
            for key, value in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return topic


def _table(datadir: Path) -> Any:
    app = faust.App(f"restore-{uuid.uuid4().hex[:8]}", store="rocksdb://", datadir=str(datadir))
    return app.Table("t", partitions=PARTITIONS, key_type=bytes, value_type=bytes,
                     options={"driver": "rocksdict"})  # fmt: skip


def _contents(store: Any, partition: int) -> dict[bytes, bytes]:
    return {
        bytes(k): bytes(v)
        for k, v in store._db_for_partition(partition).items()
        if bytes(k) != store.offset_key
    }


def _targets(restore: ChangelogRestore, topic: str, table: Any, changelog: Changelog) -> Any:
    tps = [TP(topic, p) for p in range(PARTITIONS)]
    return restore.targets(
        dict.fromkeys(tps, table),
        {tp: table.data.persisted_offset(tp) for tp in tps},
        {tp: len(changelog[tp.partition]) - 1 for tp in tps},  # the last offset
    )


async def test_a_restore_leaves_what_the_changelog_folds_to(broker: str, tmp_path: Path) -> None:
    changelog = _changelog(MIN_RECORDS + 500)
    topic = await _produce(broker, changelog)
    table = _table(tmp_path)
    restore = ChangelogRestore(KafkaConnection([broker]))
    targets = _targets(restore, topic, table, changelog)
    assert len(targets) == PARTITIONS

    await restore.restore(targets, deadline=time.monotonic() + 60)

    for p in range(PARTITIONS):
        assert _contents(table.data, p) == _folded(changelog[p])
        assert table.data.persisted_offset(TP(topic, p)) == len(changelog[p]) - 1
    assert restore.records == sum(len(r) for r in changelog.values())


async def test_an_interrupted_restore_resumes_from_the_offset_it_recorded(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changelog = _changelog(MIN_RECORDS * 3)
    topic = await _produce(broker, changelog)
    table = _table(tmp_path)
    restore = ChangelogRestore(KafkaConnection([broker]))
    monkeypatch.setattr(restore_module, "FETCH_RECORDS", 100)  # many small batches
    first = _targets(restore, topic, table, changelog)
    running = asyncio.create_task(restore.restore(first, deadline=time.monotonic() + 60))
    while sum(t.applied + 1 for t in first.values()) < 500:  # noqa: ASYNC110 (polls the restore's progress)
        await asyncio.sleep(0)
    running.cancel()  # as Faust's recovery does when a rebalance starts
    with pytest.raises(asyncio.CancelledError):
        await running

    for p in range(PARTITIONS):  # what was written is a prefix of the changelog, recorded
        reached = table.data.persisted_offset(TP(topic, p))
        assert reached is None or reached < len(changelog[p]) - 1
        prefix = changelog[p][: (reached if reached is not None else -1) + 1]
        assert _contents(table.data, p) == _folded(prefix)

    second = _targets(restore, topic, table, changelog)
    await restore.restore(second, deadline=time.monotonic() + 60)
    for p in range(PARTITIONS):
        assert _contents(table.data, p) == _folded(changelog[p])


async def test_partitions_close_to_their_end_are_left_to_faust(tmp_path: Path) -> None:
    table = _table(tmp_path)
    restore = ChangelogRestore(KafkaConnection(["127.0.0.1:9"]))
    near, far, unknown = TP("c", 0), TP("c", 1), TP("c", 2)
    targets = restore.targets(
        {near: table, far: table, unknown: table},
        {near: 5_000, far: 10, unknown: None},
        {near: 5_000 + MIN_RECORDS - 1, far: 10 + MIN_RECORDS},
    )
    assert list(targets) == [far]


@pytest.fixture(scope="module")
def hypothesis_table(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _table(tmp_path_factory.mktemp("restore-property"))


class _Message:
    def __init__(self, offset: int, key: bytes, value: bytes | None) -> None:
        self.offset, self.key, self.value = offset, key, value


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.none() | st.binary(max_size=8)),
        max_size=40,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=5),
    end=st.integers(min_value=0, max_value=45),
)
def test_any_split_into_batches_folds_like_one_pass(
    hypothesis_table: Any,
    records: list[tuple[bytes, bytes | None]],
    cuts: list[int],
    end: int,
) -> None:
    store = hypothesis_table.data
    partition = 0
    db = store._db_for_partition(partition)
    for key in [b"a", b"b", b"c", b"d", store.offset_key]:
        db.delete(key)
    target = Target(TP("c", partition), store, -1, end)
    messages = [_Message(n, k, v) for n, (k, v) in enumerate(records)]
    bounds = sorted({0, len(messages), *(c for c in cuts if c <= len(messages))})
    for lo, hi in itertools.pairwise(bounds):
        target.apply(messages[lo:hi])

    kept = records[: end + 1]
    assert _contents(store, partition) == _folded(kept)
    assert target.applied == (len(kept) - 1 if kept else -1)
    if kept:
        assert store.persisted_offset(TP("c", partition)) == len(kept) - 1


class _StubApp:
    def __init__(self, request_timeout: float) -> None:
        self.conf = type("Conf", (), {"broker_request_timeout": request_timeout})()


class _StubRecovery:
    def __init__(self, app: _StubApp, tables: dict[TP, Any], ends: dict[TP, int]) -> None:
        self.app = app
        self.tp_to_table = tables
        self.active_highwaters = ends
        self.signal_recovery_start = asyncio.Event()


class _SeekRecorder:
    def __init__(self) -> None:
        self.asked: dict[TP, int] = {}

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.asked.update(offsets)


async def test_recovery_restores_in_rounds_within_faust_request_timeout(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's seek runs under its request timeout: a round that runs out of time asks
    Faust for another round, which continues; Faust then seeks past what was restored."""
    from faust.tables.recovery import Recovery

    install_recovery_hooks()
    monkeypatch.setattr(restore_module, "FETCH_RECORDS", 100)  # a fetch is not all of it
    changelog = _changelog(MIN_RECORDS * 2)
    topic = await _produce(broker, changelog)
    table = _table(tmp_path)
    tps = {TP(topic, p) for p in range(PARTITIONS)}
    ends = {tp: len(changelog[tp.partition]) - 1 for tp in tps}

    for request_timeout, rounds_left in ((0.0, True), (120.0, False)):
        app = _StubApp(request_timeout)
        install_changelog_restore(app, KafkaConnection([broker]))  # type: ignore[arg-type]
        recovery = _StubRecovery(app, dict.fromkeys(tps, table), ends)
        offsets: dict[TP, Any] = {tp: table.data.persisted_offset(tp) for tp in tps}
        consumer = _SeekRecorder()
        await Recovery._seek_offsets(recovery, consumer, tps, offsets, "active")  # type: ignore[arg-type]
        assert recovery.signal_recovery_start.is_set() is rounds_left
        assert consumer.asked == {tp: max(offsets[tp], 0) for tp in tps}

    assert offsets == ends
    for p in range(PARTITIONS):
        assert _contents(table.data, p) == _folded(changelog[p])
