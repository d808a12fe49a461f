"""Which adapter class serves which source kind (the ``kind`` of a source in the config)."""

from __future__ import annotations

from mesh.domain import DomainConfig, SourceSpec
from mesh.sources.base import SourceAdapter


def create_adapter(spec: SourceSpec, domain: DomainConfig) -> SourceAdapter:
    """An adapter for ``spec``; the domain config admits only the kinds handled here."""
    match spec.kind:
        case "directus":
            from mesh.sources.directus.adapter import DirectusAdapter

            return DirectusAdapter(spec, domain)
