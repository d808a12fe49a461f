"""The process's one logging setup: JSON lines in production, a readable console in dev.

:func:`configure_logging` (called once by the CLI, before anything logs) puts exactly one
handler on the root logger. Every record goes through it, the project's own and those of
faust, mode, aiokafka, aiohttp and the rest, so every line carries the same fields:
``timestamp``, ``level``, ``logger``, ``worker``, ``message``; inside a traced operation
``trace_id`` and ``span_id``; an exception as the structured ``exception`` field; and the
``extra=`` fields of the call (``urn``, ``topic``, ``partition``, ``offset``, ...).

Known secrets never reach the output: see :class:`SecretMasker`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

import structlog
from opentelemetry import trace
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

from mesh.settings import Settings

__all__ = [
    "FIELDS",
    "LogFormat",
    "MeshFormatter",
    "SecretFilter",
    "SecretMasker",
    "configure_logging",
    "console_unless_set",
    "event_fields",
    "faust_logging",
    "secret_values",
]

LogFormat = Literal["json", "console"]
"""``json``: one JSON object a line (production); ``console``: aligned text for people."""

FIELDS = ("timestamp", "level", "logger", "worker", "message")
"""The fields every line has, first and in this order (the rest follow)."""

_PLAIN_RECORD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
"""A stdlib record's own attributes: any other is an ``extra=`` field."""

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked: they would blank out ordinary words everywhere."""
_SECRET_ENV_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_KEY)$", re.IGNORECASE)
# Credentials recognisable by their shape, whether or not the process knows the value.
# Each with the substrings a match cannot do without: most lines hold none of them, and
# a substring test costs a fraction of a regex scan (every request writes an audit line).
_SHAPES = (
    # As the Authorization header writes them; shorter words after "Basic" are prose.
    (("Bearer", "Basic"), re.compile(r"\b(Bearer|Basic) +[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (("eyJ",), re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),  # JWT
    (("://",), re.compile(r"(://[^:/@\s\"']*):[^@/\s\"']+@"), rf"\1:{MASK}@"),  # URL password
)


class SecretMasker:
    """Replaces known secret values, bearer/basic credentials, JWTs and URL passwords in
    text with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LENGTH:
                continue
            variants.add(secret)
            # As it appears inside a JSON string or a repr(): escaped.
            variants.add(json.dumps(secret)[1:-1])
            variants.add(repr(secret)[1:-1])
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(variants, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def mask(self, text: str) -> str:
        """``text`` with every secret in it replaced."""
        if self._known is not None:
            text = self._known.sub(MASK, text)
        for needed, pattern, replacement in _SHAPES:
            if any(part in text for part in needed):
                text = pattern.sub(replacement, text)
        return text


class SecretFilter(logging.Filter):
    """Masks secrets in a record's message and arguments before it is formatted.

    The formatter masks the rendered line again (:class:`MeshFormatter`): this filter
    covers the message, the final pass what else a line holds (extras, exception text).
    """

    def __init__(self, masker: SecretMasker) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; rewrites its message when it held a secret."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the formatter says so
            return True
        masked = self.masker.mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def secret_values(settings: Settings, environ: Mapping[str, str] | None = None) -> set[str]:
    """The values to mask: every ``SecretStr`` setting (and a URL's password in it), and
    every environment variable named like a credential (``*_TOKEN``, ``*_PASSWORD``,
    ``*_SECRET``: the sources' tokens are named by the domain config, not the settings)."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found |= _with_url_password(value.get_secret_value())
    for name, value in environ.items():
        if _SECRET_ENV_NAME.search(name):
            found |= _with_url_password(value)
    return {value for value in found if len(value) >= MIN_SECRET_LENGTH}


def _with_url_password(value: str) -> set[str]:
    try:
        password = urlsplit(value).password if "://" in value else None
    except ValueError:
        password = None
    return {value, password} if password else {value}


def event_fields(
    topic: str, partition: int, offset: int, key: bytes | str | None = None
) -> dict[str, Any]:
    """``extra=`` fields of a line about one Kafka record: where it is and, when its key is
    an entity URN, the URN."""
    fields: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
    text = key.decode(errors="replace") if isinstance(key, bytes) else key
    if text is not None and text.startswith("urn:"):
        fields["urn"] = text
    return fields


class MeshFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders a record as one JSON line or one console line, secrets masked, and never
    fails: a record that cannot be rendered becomes a line saying so."""

    def __init__(self, log_format: LogFormat, worker: str, masker: SecretMasker) -> None:
        self.masker = masker
        self.worker = worker
        self.json = log_format == "json"
        if log_format == "json":
            final: list[Processor] = [
                structlog.processors.ExceptionRenderer(
                    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
                ),
                structlog.processors.EventRenamer("message"),
                _fields_first,
                structlog.processors.JSONRenderer(),
            ]
        else:
            final = [
                structlog.dev.ConsoleRenderer(
                    colors=False, exception_formatter=structlog.dev.plain_traceback
                )
            ]
        super().__init__(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                self._add_worker,
                add_trace_context,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )

    def format(self, record: logging.LogRecord) -> str:
        """The record's line, secrets masked."""
        try:
            line = (self._plain_json(record) if self.json else None) or super().format(record)
        except Exception as exc:  # a bad format string: say so in a line of the format
            record.msg = f"unrenderable log record {record.msg!r} {record.args!r:.500}: {exc!r}"
            record.args = ()
            line = super().format(record)
        return self.masker.mask(line)

    def _plain_json(self, record: logging.LogRecord) -> str | None:
        """The JSON line of a record holding nothing but its message (no exception, stack
        or ``extra=`` fields), built directly: the same line the processors render, at a
        fraction of their cost (every request writes an audit line). ``None``: another
        record, for the processors."""
        if record.exc_info or record.exc_text or record.stack_info:
            return None
        if not _PLAIN_RECORD.issuperset(record.__dict__):
            return None
        line = {
            "timestamp": datetime.now(tz=UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "worker": self.worker,
            "message": record.getMessage(),
        }
        add_trace_context(None, "", line)
        return json.dumps(line)

    def _add_worker(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict["worker"] = self.worker
        return event_dict


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` of the current span, when there is a valid one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _fields_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # People read JSON lines too: the fixed fields in one order, then the rest.
    first = {name: event_dict.pop(name) for name in FIELDS if name in event_dict}
    return {**first, **event_dict}


def console_unless_set(settings: Settings) -> LogFormat:
    """``MESH_LOG_FORMAT`` when it is set, else ``console``: for what people watch."""
    return settings.log_format if "log_format" in settings.model_fields_set else "console"


def configure_logging(
    settings: Settings, *, log_format: LogFormat | None = None, stream: TextIO | None = None
) -> logging.Handler:
    """Make one handler on the root logger, writing ``log_format`` (default: the
    ``MESH_LOG_FORMAT`` setting) to ``stream`` (default: the process's standard error) at
    ``MESH_LOG_LEVEL``, and return it. Any handler there before is removed.

    The Faust worker keeps it (:func:`faust_logging` configures faust to); warnings
    become log lines too.
    """
    masker = SecretMasker(secret_values(settings))
    # The process's own stderr, never a replacement of it: the worker redirects sys.stderr
    # into logging (a loop if logging wrote there), and a caller's capture may be closed.
    handler = logging.StreamHandler(stream if stream is not None else sys.__stderr__ or sys.stderr)
    handler.setFormatter(
        MeshFormatter(log_format or settings.log_format, settings.worker_name, masker)
    )
    handler.addFilter(SecretFilter(masker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # One line per HTTP request drowns what the commands say.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # It says "not found: 404" at info for every schema it is about to register.
    logging.getLogger("schema_registry").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler


def faust_logging(settings: Settings) -> dict[str, Any]:
    """The faust app settings that keep the root logger as :func:`configure_logging` left
    it when the worker starts.

    Faust's worker (mode's ``setup_logging``) clears the root handlers, applies
    ``logging_config`` and then adds ``loghandlers``; without a config it would install
    its own colour handler. An incremental config only sets the level, and the handlers
    given back are the ones installed already: ours, exactly once.
    """
    return {
        "logging_config": {
            "version": 1,
            "incremental": True,
            "root": {"level": settings.log_level.upper()},
        },
        "loghandlers": list(logging.getLogger().handlers),
    }
