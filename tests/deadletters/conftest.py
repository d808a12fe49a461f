"""Fixtures of the dead-letter command tests: the mirror tests' own (a database per module,
a scenario with its own topics, app id and schema), on the session's services."""

from tests.mirror.conftest import mirror_database, scenario

__all__ = ["mirror_database", "scenario"]
