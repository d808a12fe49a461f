"""The logging setup (:mod:`mesh.logs`): one JSON object a line with the same fields for
every logger (faust's and aiokafka's included), the current span's ids, exceptions as a
field, readable console lines for people, and secrets masked everywhere.

The worker tests run a real ``mesh worker`` given secrets in its environment, feed it a
record it must dead-letter, send it requests with secrets as bearer tokens, stop it, and
read every line it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_tooling.dev.process import free_port
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from mesh.domain import DomainConfig
from mesh.logs import (
    FIELDS,
    MeshFormatter,
    SecretMasker,
    configure_logging,
    event_fields,
    secret_values,
)
from mesh.runtime.app import build_faust_app
from mesh.runtime.worker import _Worker
from mesh.settings import Settings
from tests.support.auth import FLEET_SECRET
from tests.support.fleet import Fleet, open_fleet
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

DIRECTUS_TOKEN = "directus-static-token-4f1c9e"
DB_PASSWORD = "pg-pass-7d2e91"
REDIS_PASSWORD = "redis-pass-b83a55"
SECRETS = (FLEET_SECRET, DIRECTUS_TOKEN, DB_PASSWORD, REDIS_PASSWORD)
URN = "urn:dictamesh:default:customer:7"
TOPIC = "customers.directus.entity_changed"


# -- in process --------------------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    httpx_level = logging.getLogger("httpx").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)
    logging.captureWarnings(False)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.usefixtures("root_logging")
def test_a_json_line_has_the_fields_first_the_extras_and_the_exception() -> None:
    out = io.StringIO()
    configure_logging(Settings(worker_name="w-3"), log_format="json", stream=out)
    log = logging.getLogger("mesh.catalog.ingest")
    log.warning("dead letter %s", "x", extra=event_fields("t.x", 2, 41, URN.encode()))
    try:
        raise KeyError("gone")
    except KeyError:
        log.exception("failed")
    logging.getLogger("mesh.bad").info("%d apples", "three")  # a caller's bug, still a line
    first, second, third = (json.loads(line) for line in _lines(out))
    assert list(first)[: len(FIELDS)] == list(FIELDS)
    assert first["level"] == "warning"
    assert first["logger"] == "mesh.catalog.ingest"
    assert first["worker"] == "w-3"
    assert first["message"] == "dead letter x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", first["timestamp"])
    assert (first["topic"], first["partition"], first["offset"], first["urn"]) == (
        "t.x", 2, 41, URN,
    )  # fmt: skip
    assert "trace_id" not in first  # no span
    assert second["level"] == "error"
    [exc] = second["exception"]
    assert (exc["exc_type"], exc["exc_value"]) == ("KeyError", "'gone'")
    assert exc["frames"][-1]["name"].startswith("test_a_json_line")
    assert "unrenderable" in third["message"]
    assert "three" in third["message"]


@pytest.mark.usefixtures("root_logging")
def test_a_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    out = io.StringIO()
    configure_logging(Settings(), log_format="json", stream=out)
    provider = TracerProvider()  # not made global: another test may own that
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("catalog apply") as span:
        logging.getLogger("mesh.catalog").info("inside")
    logging.getLogger("mesh.catalog").info("outside")
    inside, outside = (json.loads(line) for line in _lines(out))
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert len(inside["trace_id"]) == 32
    assert len(inside["span_id"]) == 16
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert [s.name for s in exporter.get_finished_spans()] == ["catalog apply"]


_TRACER = TracerProvider().get_tracer("tests")


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(max_size=40).map(lambda t: t.replace("%", "%%")),
    args=st.lists(st.one_of(st.integers(), st.text(max_size=12), st.none()), max_size=3),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
    name=st.sampled_from(["dictamesh.audit", "mesh.catalog", "aiokafka"]),
    traced=st.booleans(),
)
def test_a_plain_record_is_rendered_as_the_processors_render_it(
    text: str, args: list[Any], level: int, name: str, traced: bool
) -> None:
    """Records with nothing but a message take a direct way to their JSON line (every
    request writes one): the same line, field for field and in the same order."""
    formatter = MeshFormatter("json", "worker-7", SecretMasker([]))
    message = text + " %s" * len(args)
    record = logging.LogRecord(name, level, __file__, 1, message, tuple(args), None)
    with _TRACER.start_as_current_span("s") if traced else contextlib.nullcontext():
        direct = formatter._plain_json(record)
        rendered = structlog.stdlib.ProcessorFormatter.format(formatter, record)
    assert direct is not None
    fast, slow = json.loads(direct), json.loads(rendered)
    assert fast.pop("timestamp")[:16] == slow.pop("timestamp")[:16]  # to the minute
    assert list(fast.items()) == list(slow.items())
    assert ("trace_id" in fast) is traced
    with_extra = logging.LogRecord(name, level, __file__, 1, message, tuple(args), None)
    with_extra.urn = URN  # an extra= field: the processors render it
    assert formatter._plain_json(with_extra) is None


@pytest.mark.usefixtures("root_logging")
def test_console_lines_are_for_people() -> None:
    out = io.StringIO()
    configure_logging(Settings(worker_name="dev-0"), log_format="console", stream=out)
    log = logging.getLogger("mesh.mirror")
    log.info("postgres mirror: %d rows", 3, extra={"topic": "t"})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("it broke")
    lines = _lines(out)
    assert re.fullmatch(
        r"\S+Z \[info +\] postgres mirror: 3 rows +\[mesh\.mirror\] topic=t worker=dev-0", lines[0]
    ), lines[0]
    assert re.match(r"\S+Z \[error +\] it broke", lines[1]), lines[1]
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ZeroDivisionError: division by zero"
    assert not any(line.startswith("{") or "\x1b[" in line for line in lines)  # no colours


@pytest.mark.usefixtures("root_logging")
def test_warnings_become_log_lines() -> None:
    out = io.StringIO()
    configure_logging(Settings(), log_format="json", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    [line] = (json.loads(line) for line in _lines(out))
    assert line["logger"] == "py.warnings"
    assert "old API" in line["message"]


def test_the_masker_masks_known_values_and_credential_shapes() -> None:
    masker = SecretMasker(["s3cr3t-value", 'quo"te-secret', "abc"])
    assert masker.mask("it is s3cr3t-value!") == "it is ***!"
    assert masker.mask(json.dumps({"v": 'a quo"te-secret'})) == '{"v": "a ***"}'  # escaped
    assert masker.mask("abc is too short to mask") == "abc is too short to mask"
    assert masker.mask("Authorization: Bearer abc.def-ghi_jkl") == "Authorization: Bearer ***"
    assert masker.mask("basic: Basic dXNlcjpwYXNz") == "basic: Basic ***"
    assert masker.mask("Basic auth, basic settings") == "Basic auth, basic settings"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert masker.mask(f"token {jwt} refused") == "token *** refused"
    assert (
        masker.mask("cannot reach postgresql://mesh:hunter22@db:5432/mesh")
        == "cannot reach postgresql://mesh:***@db:5432/mesh"
    )
    assert masker.mask("http://127.0.0.1:8081/subjects") == "http://127.0.0.1:8081/subjects"


def test_the_secrets_are_the_secret_settings_and_credential_variables() -> None:
    settings = Settings(
        fleet_secret=SecretStr(FLEET_SECRET),
        database_url=SecretStr(f"postgresql://mesh:{DB_PASSWORD}@127.0.0.1/mesh"),
        redis_url=SecretStr("redis://127.0.0.1:6379/0"),  # no password: the URL itself
    )
    environ = {
        "MESH_DIRECTUS_TOKEN": DIRECTUS_TOKEN,
        "DIRECTUS_ADMIN_PASSWORD": "admin-pass-1",
        "MESH_AUTH_MAX_TOKEN_BYTES": "4096",  # a TOKEN in the name, not at its end
        "MESH_WEB_PORT": "6066",
    }
    assert secret_values(settings, environ) == {
        FLEET_SECRET,
        f"postgresql://mesh:{DB_PASSWORD}@127.0.0.1/mesh",
        DB_PASSWORD,
        "redis://127.0.0.1:6379/0",
        DIRECTUS_TOKEN,
        "admin-pass-1",
    }


@pytest.mark.usefixtures("root_logging")
def test_secrets_are_masked_in_messages_args_extras_and_exceptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_DIRECTUS_TOKEN", DIRECTUS_TOKEN)
    out = io.StringIO()
    settings = Settings(
        fleet_secret=SecretStr(FLEET_SECRET),
        database_url=SecretStr(f"postgresql://mesh:{DB_PASSWORD}@127.0.0.1/mesh"),
    )
    configure_logging(settings, log_format="json", stream=out)
    log = logging.getLogger("mesh.test")
    log.info(f"in the message: {FLEET_SECRET}")
    log.info("in the args: %s %r", DIRECTUS_TOKEN, {"dsn": settings.database_url})
    log.info("in an extra", extra={"password": DB_PASSWORD})
    log.info("a header: %s", {"Authorization": "Bearer some.opaque-token"})
    try:
        raise ConnectionError(f"cannot log in with {DIRECTUS_TOKEN} at postgresql://x:y@db/z")
    except ConnectionError:
        log.exception("failed")
    text = out.getvalue()
    for secret in (*SECRETS[:3], "some.opaque-token", "x:y@"):
        assert secret not in text, secret
    assert len(_lines(out)) == 5
    assert all(json.loads(line) for line in _lines(out))


@pytest.mark.usefixtures("root_logging")
def test_the_faust_worker_keeps_the_one_handler(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, log_level="warning")
    handler = configure_logging(settings, stream=io.StringIO())
    app = build_faust_app(settings)
    # What the worker does at start (without taking over this process's stdout).
    worker = _Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker._setup_logging()
    root = logging.getLogger()
    assert root.handlers == [handler]
    assert root.level == logging.WARNING


# -- a real worker -------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("logs")
    closed = free_port()  # nothing listens there
    env = {
        "MESH_LOG_FORMAT": "json",
        "MESH_DIRECTUS_TOKEN": DIRECTUS_TOKEN,
        "MESH_DATABASE_URL": f"postgresql://mesh:{DB_PASSWORD}@127.0.0.1:{closed}/mesh",
        "MESH_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}/0",
    }
    async with open_fleet(sample_domain, root, "logs", 2, ["logs-a"], env) as fleet:
        yield fleet


@pytest_asyncio.fixture(scope="module")
async def run(fleet: Fleet) -> list[dict[str, Any]]:
    """Every line of the worker's run: it dead-letters a record, refuses secrets sent as
    bearer tokens, and stops."""
    worker = fleet.workers[0]
    await fleet.send_raw(TOPIC, URN.encode(), b"not an Avro event")
    for secret in SECRETS:
        # A request aiohttp cannot parse: it logs the error, the value in it, a traceback.
        reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
        writer.write(f"GET /healthz HTTP/1.1\r\nContent-Length: {secret}\r\n\r\n".encode())
        await writer.drain()
        await reader.read()
        writer.close()
    async with aiohttp.ClientSession() as http:
        for token in SECRETS:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{worker.base}/api/v1/entities/customer/7", headers=headers) as r:
                assert r.status == 401
    await _wait_for(worker, lambda r: r["logger"] == "mesh.catalog.ingest" and r.get("urn") == URN)
    await worker.stop()
    return worker.records()


async def _wait_for(worker: MeshWorker, found: Callable[[dict[str, Any]], bool]) -> None:
    async def logged() -> bool:
        return any(found(record) for record in worker.records())

    await wait_until(logged, timeout=60, what=lambda: f"a line in\n{worker.log_tail()}")


async def test_a_worker_writes_only_json_lines_with_the_fields(
    run: list[dict[str, Any]],
) -> None:
    assert run
    for record in run:
        assert list(record)[: len(FIELDS)] == list(FIELDS), record
        assert record["worker"] == "logs-a", record
    loggers = {record["logger"] for record in run}
    assert any(name.startswith("faust") for name in loggers), loggers
    assert any(name.startswith("aiokafka") for name in loggers), loggers
    assert any(name.startswith("mesh") for name in loggers), loggers
    assert any(record.get("exception") for record in run), "no line with an exception"


async def test_a_dead_letter_line_names_the_record(run: list[dict[str, Any]]) -> None:
    [line] = [r for r in run if r["logger"] == "mesh.catalog.ingest" and r.get("urn") == URN]
    assert line["level"] == "warning"
    assert line["stage"] == "catalog-decode"
    assert line["topic"] == TOPIC
    assert isinstance(line["partition"], int)
    assert isinstance(line["offset"], int)


async def test_no_secret_appears_in_any_line(fleet: Fleet, run: list[dict[str, Any]]) -> None:
    log = fleet.workers[0].run_log()
    assert any(r["logger"] == "mesh.auth.middleware" for r in run)  # the refusals are logged
    refused = [r for r in run if r["logger"] == "aiohttp.server" and r["level"] == "error"]
    assert len(refused) == len(SECRETS)
    for record in refused:  # each named its secret, masked
        [exc] = record["exception"]
        assert "Content-Length: ***" in exc["exc_value"], exc
    for secret in SECRETS:
        assert secret not in log, secret
