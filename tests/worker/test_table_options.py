"""The catalog tables' RocksDB options (see ``mesh.runtime.store.TableOptions``)."""

from __future__ import annotations

from pathlib import Path

from faust.types import TP

from mesh.runtime.app import build_faust_app
from mesh.runtime.membership import Membership
from mesh.runtime.store import MEMTABLE_BLOOM_RATIO, declare_store
from mesh.settings import Settings


def test_tables_write_no_write_ahead_log_and_filter_their_memtables(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, broker_url="kafka://127.0.0.1:9")
    app = build_faust_app(settings)
    options = {"driver": "rocksdict", "block_cache_size": 1 << 20, "write_buffer_size": 1 << 20}
    store = declare_store(
        app, Membership(app), "entities_test", partitions=2, options=options, help="test"
    )
    values = {f"urn:dictamesh:default:test:{n}".encode(): b'{"v":1}' for n in range(1000)}
    store.write(1, values, changelog_offset=999)
    assert store.get(1, b"urn:dictamesh:default:test:7") == b'{"v":1}'
    assert store._data.persisted_offset(TP(store.changelog_topic, 1)) == 999
    db_dir = next(tmp_path.rglob("entities_test-1.db"))
    # The changelog is the log: RocksDB's own stays empty.
    assert [wal.stat().st_size for wal in db_dir.glob("*.log")] == [0]
    log = (db_dir / "LOG").read_text(errors="replace")
    assert f"memtable_prefix_bloom_size_ratio: {MEMTABLE_BLOOM_RATIO:f}" in log
    assert "memtable_whole_key_filtering: 1" in log
    assert "capacity : 1048576" in log
