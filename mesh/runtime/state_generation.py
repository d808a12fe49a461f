"""Local tables tied to the Kafka state they were built from.

A worker's RocksDB tables are a copy of its changelogs, and the offsets they recorded are
offsets in those changelogs. When Kafka's state is recreated (a new cluster, the topics
reset) while a worker keeps its volume, the tables belong to state that no longer exists:
Faust's recovery refuses them when their offsets are past the new changelogs' ends
(``ConsistencyError``, a crash loop), and silently mixes old entities with new ones when
they are not. So the worker records the fleet generation (:mod:`mesh.runtime.generation`)
next to its tables, and before it opens them compares it with the one Kafka holds: a
different one means the tables are dropped and rebuilt from the changelogs.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from mesh.runtime.generation import (
    GenerationError,
    GenerationTopic,
    generation_topic,
    read_generation,
)
from mesh.runtime.kafka import KafkaConnection
from mesh.settings import Settings

logger = logging.getLogger(__name__)

GENERATION_FILE = "fleet-generation"
"""In the worker's data directory: the generation its tables were built in."""


def reconcile_tables(worker_dir: Path, generation: str) -> bool:
    """Drop everything in ``worker_dir`` when it was built in another fleet generation
    than ``generation``; record ``generation``. True when something was dropped.

    A directory without a recorded generation (new, or from before generations were
    recorded) is kept.
    """
    worker_dir.mkdir(parents=True, exist_ok=True)
    marker = worker_dir / GENERATION_FILE
    recorded = marker.read_text().strip() if marker.exists() else None
    dropped = False
    if recorded is not None and recorded != generation:
        for child in worker_dir.iterdir():
            if child == marker:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
            dropped = True
    if recorded != generation:
        scratch = marker.with_suffix(".new")
        scratch.write_text(generation + "\n")
        scratch.replace(marker)  # never a half-written marker after a crash
    return dropped


def check_tables_generation(settings: Settings) -> None:
    """Before the worker opens its tables: drop them if Kafka's state was recreated since
    they were built (logged as a warning). When Kafka cannot be asked, the tables are kept
    and nothing is recorded (the worker's own connection will report Kafka's state)."""
    topic = GenerationTopic(
        generation_topic(settings.app_id), settings.topic_declare, settings.replication_factor
    )
    # Its own loop: the worker's event loop is made by the worker afterwards.
    loop = asyncio.new_event_loop()
    try:
        generation = loop.run_until_complete(
            read_generation(KafkaConnection.from_settings(settings), topic)
        )
    except GenerationError as exc:
        logger.warning("Cannot check the tables' fleet generation (kept as they are): %s", exc)
        return
    finally:
        loop.close()
    if reconcile_tables(settings.worker_dir, generation):
        logger.warning(
            "Kafka's state was recreated since this worker's tables were built (fleet "
            "generation now %s): dropped them from %s; they are rebuilt from the changelogs",
            generation,
            settings.worker_dir,
        )
