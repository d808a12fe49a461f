"""The environment variables DictaMesh reads: what a manifest or compose file may set on a
DictaMesh container, so a misspelt ``MESH_*`` name fails a test instead of being ignored."""

from __future__ import annotations

from mesh_tooling.settings import DevSettings
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from mesh.settings import Settings

# Read by the process but not through the settings model.
OTHER_VARIABLES = frozenset(
    {
        "MESH_DIRECTUS_URL",  # expanded in the domain config (sources[].url)
        "MESH_DIRECTUS_TOKEN",  # named by the domain config (sources[].token_env)
        "MESH_DIRECTUS_WRITE_TOKEN",  # named by the domain config (sources[].write_token_env)
        # The standard OpenTelemetry variables (mesh/observability/tracing.py reads them).
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "TMPDIR",
        "PATH",
    }
)


def setting_names(model: type[BaseSettings]) -> frozenset[str]:
    """Every environment variable ``model`` reads (prefixed names and aliases)."""
    prefix = str(model.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    return frozenset(names)


RUNTIME_VARIABLES = setting_names(Settings) | OTHER_VARIABLES
"""What the worker image reads."""
TOOLING_VARIABLES = setting_names(DevSettings) | OTHER_VARIABLES
"""What the tooling image (the seed job) reads."""
