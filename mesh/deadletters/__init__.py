"""``mesh deadletters``: read, inspect and replay the dead-letter topic.

- :mod:`.letters`: a dead letter as read back, its origin and what a replay of it means;
- :mod:`.reader`: reading the topic without a consumer group (no offsets committed);
- :mod:`.render`: the lines ``list`` and ``show`` print;
- :mod:`.replay`: sending letters back, or asking their source to read the item again;
- :mod:`.command`: the sub-commands, their arguments and exit codes.
"""

from mesh.deadletters.errors import DeadLetterToolError
from mesh.deadletters.letters import Letter, LetterId, Origin

__all__ = ["DeadLetterToolError", "Letter", "LetterId", "Origin"]
