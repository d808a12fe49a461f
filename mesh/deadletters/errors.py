"""The error of the dead-letter commands."""

from __future__ import annotations

from mesh.errors import MeshError


class DeadLetterToolError(MeshError):
    """A dead-letter command cannot do what was asked (broker unreachable, topic missing,
    offset not found, bad arguments); the message says what to do. Exit code 2."""
