"""The sample domain shipped with DictaMesh: ``config/domain.yaml`` (Directus customers,
products, invoices and their items) and the Avro ``schemas/`` it needs. The settings use
them by default; ``mesh init`` copies them out to edit."""

from __future__ import annotations

import shutil
from pathlib import Path

from mesh.errors import ConfigError

SAMPLES = Path(__file__).parent


def write_samples(target: Path) -> list[Path]:
    """Copy ``config/`` and ``schemas/`` into ``target``; :class:`ConfigError` (nothing
    written) when any of the files exists already."""
    pairs = [
        (source, target / source.relative_to(SAMPLES))
        for folder in ("config", "schemas")
        for source in sorted((SAMPLES / folder).rglob("*"))
        if source.is_file() and source.suffix in (".yaml", ".avsc")
    ]
    existing = [str(dest) for _, dest in pairs if dest.exists()]
    if existing:
        raise ConfigError(
            f"{', '.join(existing[:3])}{' …' if len(existing) > 3 else ''} exist already; "
            "nothing was written (choose an empty directory: mesh init DIR)"
        )
    for source, dest in pairs:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    return [dest for _, dest in pairs]
