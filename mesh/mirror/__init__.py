"""The Postgres mirror of the catalog: one table per entity type, kept by its own consumer.

See :mod:`mesh.mirror.consumer` for the batch cycle, :mod:`mesh.mirror.upsert` for the
write semantics and :mod:`mesh.mirror.migrations` for the schema.
"""

from mesh.mirror.build import build_mirror, mirror_group
from mesh.mirror.consumer import MirrorConsumer
from mesh.mirror.decode import DeadLetter, MirrorDecoder
from mesh.mirror.errors import MirrorDatabaseError
from mesh.mirror.metrics import MirrorMetrics
from mesh.mirror.migrations import MIGRATIONS, migrate
from mesh.mirror.rows import MirrorRow, collapse
from mesh.mirror.tables import MirrorTable, mirror_tables
from mesh.mirror.writer import MirrorWriter, Rejected

__all__ = [
    "MIGRATIONS",
    "DeadLetter",
    "MirrorConsumer",
    "MirrorDatabaseError",
    "MirrorDecoder",
    "MirrorMetrics",
    "MirrorRow",
    "MirrorTable",
    "MirrorWriter",
    "Rejected",
    "build_mirror",
    "collapse",
    "migrate",
    "mirror_group",
    "mirror_tables",
]
