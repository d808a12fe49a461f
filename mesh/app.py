"""The worker factory: one call builds a worker's app with its tables, agents and views."""

from __future__ import annotations

from mesh.auth import auth_config_problem
from mesh.context import MeshContext
from mesh.domain import DomainConfig, load_domain
from mesh.errors import ConfigError
from mesh.observability.tracing import configure_tracing
from mesh.runtime.app import build_faust_app
from mesh.runtime.state_generation import check_tables_generation
from mesh.runtime.worker import run_faust_worker
from mesh.schemas import load_event_schemas
from mesh.settings import Settings


def create_app(settings: Settings, domain: DomainConfig | None = None) -> MeshContext:
    """Build a worker for ``settings``: the stream runtime's app with DictaMesh's tables,
    agents and views registered on it; returns the worker's context (``.app`` is the app).

    ``domain`` defaults to the file at ``settings.domain_config``.
    """
    # Imported here so that importing mesh never imports the agent modules' dependencies.
    from mesh.agents import register_agents
    from mesh.cache.service import register_read_cache
    from mesh.catalog.links import register_peer_links
    from mesh.tables import register_tables
    from mesh.web import register_views

    domain = domain or load_domain(settings.domain_config)
    context = MeshContext(settings=settings, domain=domain, app=build_faust_app(settings))
    register_read_cache(context)
    register_peer_links(context)
    register_tables(context)
    register_agents(context)
    register_views(context)
    return context


def run_worker(settings: Settings) -> int:
    """Validate the config, build the worker and run it; return the exit code."""
    # Before the app exists: its HTTP client session must be made instrumented.
    configure_tracing(settings.worker_name)
    context = create_app(settings)
    problem = auth_config_problem(settings)
    if problem is not None:
        raise ConfigError(problem)
    # Fail before joining the group when schemas and config disagree.
    load_event_schemas(context.domain, settings.schemas_dir)
    check_tables_generation(settings)
    return run_faust_worker(context.app, settings.log_level)
