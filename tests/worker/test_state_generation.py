"""A worker's tables are dropped when Kafka's fleet generation is not the one they were
built in, and kept otherwise. The fleet of workers on a recreated Kafka is in
``tests/cache/test_generation.py``."""

from __future__ import annotations

from pathlib import Path

from mesh.runtime.state_generation import GENERATION_FILE, reconcile_tables


def _tables(worker_dir: Path) -> Path:
    table = worker_dir / "v1" / "tables" / "entities_customer-0.db"
    table.mkdir(parents=True)
    (table / "000001.sst").write_bytes(b"rows")
    return table


def test_tables_without_a_recorded_generation_are_kept_and_adopted(tmp_path: Path) -> None:
    table = _tables(tmp_path)
    assert reconcile_tables(tmp_path, "gen-1") is False
    assert (table / "000001.sst").read_bytes() == b"rows"
    assert (tmp_path / GENERATION_FILE).read_text().strip() == "gen-1"


def test_tables_of_the_same_generation_are_kept(tmp_path: Path) -> None:
    reconcile_tables(tmp_path, "gen-1")
    table = _tables(tmp_path)
    assert reconcile_tables(tmp_path, "gen-1") is False
    assert table.exists()


def test_tables_of_another_generation_are_dropped_and_the_new_one_recorded(
    tmp_path: Path,
) -> None:
    reconcile_tables(tmp_path, "gen-1")
    _tables(tmp_path)
    (tmp_path / "stray-file").write_text("x")
    assert reconcile_tables(tmp_path, "gen-2") is True
    assert sorted(p.name for p in tmp_path.iterdir()) == [GENERATION_FILE]
    assert (tmp_path / GENERATION_FILE).read_text().strip() == "gen-2"
    assert reconcile_tables(tmp_path, "gen-2") is False  # settled


def test_a_new_worker_directory_is_created(tmp_path: Path) -> None:
    worker_dir = tmp_path / "workers" / "worker-0"
    assert reconcile_tables(worker_dir, "gen-1") is False
    assert (worker_dir / GENERATION_FILE).exists()
