"""The published API and stream documents say what the server really does.

gateway/web/openapi.json (served at /v1/openapi.json, copied to docs/) must
list exactly the routes the app registers, and real answers must match the
statuses and schemas it declares; docs/schemas/ must be what
docs/generate_schemas.py writes today, and real stream events must match them.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import gateway
from gateway import events
from gateway.config import CoreConfig, parse_config
from gateway.daemon import Daemon
from gateway.delivery.board import DeliveryBoard
from gateway.ingest import Ingestor
from gateway.metrics import Metrics
from gateway.replies import Replies
from gateway.store import ClockRow, Tx
from gateway.store.sqlite import SqliteStore
from gateway.stream import StreamNotifier, StreamReader
from gateway.web import bodies
from gateway.web.app import ComponentRoutes, build_app
from gateway.web.auth import TokenTable
from gateway.web.context import CONTEXT, WebContext
from gateway.web.proxies import ProxyRules

REPO = Path(__file__).resolve().parents[2]
OPENAPI = REPO / "gateway" / "web" / "openapi.json"
DOCS_OPENAPI = REPO / "docs" / "openapi.json"
SCHEMA_DIR = REPO / "docs" / "schemas"
DOC_URI = "urn:helpline:openapi"
AUTH = {"Authorization": "Bearer secret"}
JSON = {**AUTH, "Content-Type": "application/json"}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _load(name: str, path: Path) -> ModuleType:
    """Import a file by path: tests/ and docs/ need not be packages for this module to run."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


schemas = _load("helpline_test_schemas", REPO / "tests" / "schemas.py")
generate = _load("helpline_generate_schemas", REPO / "docs" / "generate_schemas.py")
validate_event = schemas.validate_event


@functools.cache
def _document() -> dict[str, Any]:
    return dict(json.loads(OPENAPI.read_text(encoding="utf-8")))


@functools.cache
def _registry() -> Registry[Any]:
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
    return registry


def _pointer(*parts: str) -> str:
    escaped = (quote(p.replace("~", "~0").replace("/", "~1"), safe="") for p in parts)
    return f"{DOC_URI}#/" + "/".join(escaped)


def _check(ref: str, value: object, what: str) -> None:
    validator = Draft202012Validator(
        {"$ref": ref}, registry=_registry(), format_checker=schemas._format_checker()
    )
    errors = [
        f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(value)
    ]
    assert not errors, f"{what} does not match the OpenAPI document:\n" + "\n".join(errors)


async def _answer(resp: ClientResponse, method: str, path: str) -> Any:
    """Read an answer and check its status, media type and body against the document."""
    operation = _document()["paths"][path][method]
    status = str(resp.status)
    assert status in operation["responses"], (
        f"{method.upper()} {path} answered {status}, which the document does not list"
    )
    parts = ["paths", path, method, "responses", status]
    response = operation["responses"][status]
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        parts = ["components", "responses", name]
        response = _document()["components"]["responses"][name]
    media = resp.content_type
    assert media in response["content"], f"{method.upper()} {path} {status} served {media}"
    for header in response.get("headers", {}):
        assert header in resp.headers, f"{method.upper()} {path} {status} lacks {header}"
    raw = await resp.read()
    if not media.endswith("json"):
        return raw.decode()
    body = json.loads(raw)
    _check(_pointer(*parts, "content", media, "schema"), body, f"{method.upper()} {path} {status}")
    return body


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    notifier = StreamNotifier()
    metrics = Metrics()
    store = SqliteStore(tmp_path / "helpline.db", on_commit=notifier.committed)
    await store.open()
    core = CoreConfig()
    daemon = Daemon(parse_config(""), tmp_path / "state")  # only for its readiness body
    daemon.store = store
    reader = StreamReader(store, notifier)
    ctx = WebContext(
        store=store,
        ingestor=Ingestor(store, core, metrics),
        replies=Replies(store, core),
        reader=reader,
        notifier=notifier,
        metrics=metrics,
        tokens=TokenTable({"t": ("secret", False), "crm": ("trusted", True)}),
        config=core,
        readiness=daemon.readiness,
        proxies=ProxyRules([]),
        board=DeliveryBoard(store, reader),
    )
    app = build_app(ctx, ComponentRoutes())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    await store.close()


def test_docs_copy_is_identical() -> None:
    assert DOCS_OPENAPI.read_bytes() == OPENAPI.read_bytes(), (
        "docs/openapi.json differs from gateway/web/openapi.json: copy it"
    )


def test_document_is_valid_openapi() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(_document())
    assert _document()["openapi"].startswith("3.1.")
    assert _document()["info"]["version"] == gateway.__version__


def test_document_is_formatted() -> None:
    text = OPENAPI.read_text(encoding="utf-8")
    assert text == json.dumps(_document(), indent=2, ensure_ascii=False) + "\n"


async def test_document_lists_every_route(client: TestClient) -> None:  # type: ignore[type-arg]
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical != "/{tail}"
        and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path)
        for path, item in _document()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert documented == served


async def test_openapi_route_serves_the_document(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/v1/openapi.json")
    assert resp.status == 200
    served = json.loads(await resp.read())
    assert served["servers"] == [{"url": str(client.make_url("")).rstrip("/")}]
    assert {**served, "servers": _document()["servers"]} == _document()


def _constraints(schema: dict[str, Any], with_defaults: bool) -> dict[str, Any]:
    keys = {"maxLength", "minLength", "enum", "const", "format"}
    if with_defaults:
        keys.add("default")
    found = {k: v for k, v in schema.items() if k in keys}
    for branch in schema.get("anyOf", []) + schema.get("allOf", []):
        found.update({k: v for k, v in branch.items() if k in keys})
    if found.get("enum") is not None and len(found["enum"]) == 1:
        found["const"] = found.pop("enum")[0]
    return found


@pytest.mark.parametrize(
    ("model", "with_defaults"),
    [
        (bodies.MessageIn, True),
        (bodies.FromIn, True),
        (bodies.ReplyIn, True),
        (bodies.AuthorIn, True),
        (bodies.TransitionIn, True),
        (events.InboundMessage, False),
        (events.OutboundMessage, False),
        (events.ConversationChange, False),
        (events.Sender, False),
        (events.Author, False),
        (events.ContactMerged, False),
        (events.ContactSplit, False),
        (events.LinkSuggested, False),
        (events.HandleData, False),
        (events.ContactErased, False),
        (events.AutomaticMessage, False),
        (events.FailedRecipient, False),
        (events.DeliveryFailed, False),
        (events.AttachmentData, False),
    ],
)
def test_document_models_match_pydantic(model: type[BaseModel], with_defaults: bool) -> None:
    if with_defaults:
        real = model.model_json_schema(by_alias=True, mode="validation")
    else:
        real = model.model_json_schema(by_alias=True, mode="serialization")
    documented = _document()["components"]["schemas"][model.__name__]
    assert set(documented["properties"]) == set(real["properties"])
    assert set(real.get("required", [])) <= set(documented.get("required", []))
    assert documented.get("additionalProperties") is False
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    for name, prop in real["properties"].items():
        expected = _constraints(prop, with_defaults)
        factory = fields[name].default_factory
        if with_defaults and factory is not None:  # pydantic leaves these out of its schema
            value = factory()  # type: ignore[call-arg]
            is_model = isinstance(value, BaseModel)
            expected["default"] = value.model_dump(mode="json") if is_model else value
        documented_prop = documented["properties"][name]
        assert _constraints(documented_prop, with_defaults) == expected, f"{model.__name__}.{name}"


def test_schemas_are_up_to_date(tmp_path: Path) -> None:
    generate.write_schemas(tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in SCHEMA_DIR.glob("*.json")}
    assert set(fresh) == {f"{t.value}.json" for t in events.DATA_MODELS}
    assert committed == fresh, (
        "docs/schemas is stale: run .venv/bin/python docs/generate_schemas.py"
    )
    assert set(schemas.known_types()) == {t.value for t in events.EventType}


async def _sse_events(client: TestClient, count: int, **headers: str) -> list[Any]:  # type: ignore[type-arg]
    """Read `count` events from the server-sent stream, checking each id is the offset."""
    resp = await client.get(
        "/v1/stream", headers={**AUTH, "Accept": "text/event-stream", **headers}
    )
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    found: list[Any] = []
    last_id = None
    try:
        while len(found) < count:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith("id: "):
                last_id = int(line[4:])
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["offset"] == last_id
                found.append(event)
    finally:
        resp.close()
    return found


async def test_api_answers_match_the_document(client: TestClient) -> None:  # type: ignore[type-arg]
    message = {"from": {"email": "Ann@Example.org", "name": "Ann"}, "text": "My order is late."}
    post = "/v1/messages"

    resp = await client.post(post, json=message, headers={**AUTH, "Idempotency-Key": "k1"})
    ack = await _answer(resp, "post", post)
    assert resp.status == 201
    resp = await client.post(post, json=message, headers={**AUTH, "Idempotency-Key": "k1"})
    assert (await _answer(resp, "post", post)) == {**ack, "duplicate": True}
    resp = await client.post(
        post, json={**message, "text": "other"}, headers={**AUTH, "Idempotency-Key": "k1"}
    )
    assert (await _answer(resp, "post", post))["status"] == 422
    for bad in ({"from": {}, "text": ""}, {**message, "from": {"email": "nope"}}):
        resp = await client.post(post, json=bad, headers=AUTH)
        assert (await _answer(resp, "post", post))["errors"]
    resp = await client.post(post, data="text", headers={**AUTH, "Content-Type": "text/plain"})
    assert (await _answer(resp, "post", post))["status"] == 415
    resp = await client.post(post, data=b"x" * (2 << 20), headers=JSON)
    assert (await _answer(resp, "post", post))["status"] == 413
    resp = await client.post(post, json=message)
    assert (await _answer(resp, "post", post))["status"] == 401

    conv, contact = ack["conversation_id"], ack["contact_id"]
    one = "/v1/conversations/{conversation_id}"
    reply = {"text": "It ships today.", "author": {"name": "Bob"}}
    resp = await client.post(f"/v1/conversations/{conv}/replies", json=reply, headers=AUTH)
    assert (await _answer(resp, "post", one + "/replies"))["duplicate"] is False
    resp = await client.post("/v1/conversations/nope/replies", json=reply, headers=AUTH)
    assert (await _answer(resp, "post", one + "/replies"))["status"] == 404
    resp = await client.post(
        f"/v1/conversations/{conv}/resolve", json={"reason": "done"}, headers=AUTH
    )
    assert (await _answer(resp, "post", one + "/resolve"))["changed"] is True
    resp = await client.post(f"/v1/conversations/{conv}/resolve", data=b"", headers=JSON)
    assert (await _answer(resp, "post", one + "/resolve"))["offset"] is None
    resp = await client.post(f"/v1/conversations/{conv}/reopen", data=b"", headers=JSON)
    assert (await _answer(resp, "post", one + "/reopen"))["changed"] is True
    resp = await client.post(f"/v1/conversations/{conv}/reopen", json={"why": 1}, headers=AUTH)
    assert (await _answer(resp, "post", one + "/reopen"))["status"] == 400

    resp = await client.get("/v1/conversations?status=open&channel=api", headers=AUTH)
    assert [
        c["id"] for c in (await _answer(resp, "get", "/v1/conversations"))["conversations"]
    ] == [conv]
    resp = await client.get("/v1/conversations?limit=0", headers=AUTH)
    assert (await _answer(resp, "get", "/v1/conversations"))["status"] == 400
    resp = await client.get(f"/v1/conversations/{conv}", headers=AUTH)
    detail = await _answer(resp, "get", one)
    resp = await client.get("/v1/conversations/nope", headers=AUTH)
    assert (await _answer(resp, "get", one))["status"] == 404
    resp = await client.get(f"/v1/contacts/{contact}", headers=AUTH)
    handles = (await _answer(resp, "get", "/v1/contacts/{contact_id}"))["handles"]
    assert [(h["kind"], h["value"]) for h in handles] == [("email", "ann@example.org")]
    resp = await client.get("/v1/contacts/nope", headers=AUTH)
    assert (await _answer(resp, "get", "/v1/contacts/{contact_id}"))["status"] == 404

    # Contacts: a suggested link, a merge on a trusted token, lookup by handle, a split.
    resp = await client.post(
        post, json={"from": {"phone": "+4930555666"}, "text": "hi"}, headers=AUTH
    )
    bob = await _answer(resp, "post", post)
    both = {"from": {"email": "ann@example.org", "phone": "+4930555666"}, "text": "both"}
    resp = await client.post(post, json=both, headers=AUTH)
    assert (await _answer(resp, "post", post))["contact_id"] == contact
    resp = await client.post(post, json=both, headers={"Authorization": "Bearer trusted"})
    assert (await _answer(resp, "post", post))["contact_id"] == contact
    find = "/v1/contacts"
    resp = await client.get(f"{find}?handle=%2B49%2030%20555666", headers=AUTH)
    assert (await _answer(resp, "get", find))["merged_ids"] == [bob["contact_id"]]
    resp = await client.get(f"{find}?handle=", headers=AUTH)
    assert (await _answer(resp, "get", find))["status"] == 400
    resp = await client.get(f"{find}?handle=nobody@example.org", headers=AUTH)
    assert (await _answer(resp, "get", find))["status"] == 404
    split = "/v1/contacts/{contact_id}/split"
    resp = await client.post(f"/v1/contacts/{bob['contact_id']}/split", data=b"", headers=JSON)
    assert (await _answer(resp, "post", split))["contact"]["contact_id"] == bob["contact_id"]
    resp = await client.post(f"/v1/contacts/{bob['contact_id']}/split", data=b"", headers=JSON)
    assert (await _answer(resp, "post", split))["status"] == 404
    erase = "/v1/contacts/{contact_id}/erase"
    resp = await client.post(
        f"/v1/contacts/{bob['contact_id']}/erase", json={"reason": "asked"}, headers=AUTH
    )
    assert (await _answer(resp, "post", erase))["contact"]["handles"] == []
    resp = await client.post("/v1/contacts/nope/erase", data=b"", headers=JSON)
    assert (await _answer(resp, "post", erase))["status"] == 404

    resp = await client.get("/v1/stream?limit=1000", headers=AUTH)
    page = await _answer(resp, "get", "/v1/stream")
    assert page["next_after"] == page["events"][-1]["offset"]
    in_conversation = [e for e in page["events"] if e["subject"] == conv]
    assert in_conversation[: len(detail["events"])] == detail["events"]
    # Every type the API can produce; the email connector's, the call API's and the
    # first-response tracker's own are checked in their tests.
    connector_only = {
        events.EventType.MESSAGE_AUTOMATIC.value,
        events.EventType.MESSAGE_DELIVERY_FAILED.value,
        events.EventType.CALL_RINGING.value,
        events.EventType.CALL_ANSWERED.value,
        events.EventType.CALL_MISSED.value,
        events.EventType.FIRST_RESPONSE_MET.value,
        events.EventType.FIRST_RESPONSE_BREACHED.value,
    }
    assert {e["type"] for e in page["events"]} == {
        t.value for t in events.EventType
    } - connector_only
    for event in page["events"]:
        validate_event(event)
    resp = await client.get("/v1/stream?after=x", headers=AUTH)
    assert (await _answer(resp, "get", "/v1/stream"))["status"] == 400

    streamed = await _sse_events(client, len(page["events"]))
    assert streamed == page["events"]
    resumed = await _sse_events(client, 1, **{"Last-Event-ID": str(page["events"][1]["offset"])})
    assert resumed == page["events"][2:3]

    assert (await _answer(await client.get("/healthz"), "get", "/healthz")) == {"status": "ok"}
    resp = await client.get("/readyz")  # the HTTP listener is not the daemon's: unready
    assert (await _answer(resp, "get", "/readyz"))["status"] == "unready"
    metrics = await _answer(await client.get("/metrics"), "get", "/metrics")
    assert "helpline_ingested_total" in metrics

    resp = await client.delete("/v1/stream", headers=AUTH)
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD"
    body = json.loads(await resp.read())
    _check(
        _pointer(
            "components",
            "responses",
            "MethodNotAllowed",
            "content",
            "application/problem+json",
            "schema",
        ),
        body,
        "405",
    )


async def test_report_answers_match_the_document(client: TestClient) -> None:  # type: ignore[type-arg]
    """The first-response report with answered and waiting clocks, filtered, and refused."""
    message = {"from": {"email": "ann@example.org", "name": "Ann"}, "text": "Hello?"}
    resp = await client.post("/v1/messages", json=message, headers=AUTH)
    ack = await _answer(resp, "post", "/v1/messages")
    ctx = client.app[CONTEXT]
    now = ctx.ingestor.now()
    ids = {
        "conversation_id": ack["conversation_id"],
        "conversation_number": 1,
        "contact_id": ack["contact_id"],
    }
    answered = ClockRow(
        **ids,
        channel="email",
        started_at=now - 100,
        customer_at=now - 130,
        target=180.0,
        calendar="office",
        due_at=now + 3600,
        state="met",
        stopped_at=now - 10,
        seconds=90.0,
        business_seconds=0.0,
        within_target=True,
        rearm=True,
    )
    waiting = ClockRow(**ids, channel="chat", started_at=now - 50, target=13.0, due_at=now - 37)

    async def unit(tx: Tx) -> None:
        await tx.put_clock(answered)
        await tx.put_clock(waiting)

    await ctx.store.write(unit)
    path = "/v1/reports/first-response"
    resp = await client.get(path, headers=AUTH)
    body = await _answer(resp, "get", path)
    assert body["channels"]["email"]["p50"] == 90.0
    assert body["channels"]["chat"]["waiting"]["oldest"][0]["name"] == "Ann"
    assert body["daily"][0]["channel"] == "email"
    since = quote("2000-01-01T00:00:00+02:00")
    resp = await client.get(f"{path}?since={since}&channel=email&business_hours=true", headers=AUTH)
    body = await _answer(resp, "get", path)
    assert list(body["channels"]) == ["email"] and body["channels"]["email"]["p50"] == 0.0
    assert body["channels"]["email"]["stages"]["customer_to_accepted"]["p50"] == 30.0
    for bad in ("since=x", "channel=fax", "business_hours=2"):
        resp = await client.get(f"{path}?{bad}", headers=AUTH)
        assert (await _answer(resp, "get", path))["errors"][0]["field"] == bad.split("=")[0]
    assert (await _answer(await client.get(path), "get", path))["status"] == 401


async def test_validate_event_checks_real_events(client: TestClient) -> None:  # type: ignore[type-arg]
    message = {
        "from": {"phone": "+49 30 1234567"},
        "text": "Call me back.",
        "sent_at": "2024-05-01T08:00:00+02:00",
    }
    resp = await client.post("/v1/messages", json=message, headers=AUTH)
    assert resp.status == 201
    resp = await client.get("/v1/stream", headers=AUTH)
    page = await resp.json()
    inbound: dict[str, Any] = next(
        e for e in page["events"] if e["type"] == events.EventType.MESSAGE_INBOUND
    )
    for event in page["events"]:
        validate_event(event)
    assert inbound["data"]["from"]["phone"] == "+49301234567"

    def broken(change: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = copy.deepcopy(inbound)
        for dotted, value in change.items():
            *parents, leaf = dotted.split(".")
            target: Any = event
            for part in parents:
                target = target[part]
            if value is None:
                del target[leaf]
            else:
                target[leaf] = value
        return event

    cases: list[tuple[dict[str, Any], str]] = [
        ({"data.conversation_number": "1"}, "conversation_number"),
        ({"data.channel": "fax"}, "fax"),
        ({"data.from.handle": "x"}, "handle"),
        ({"extra": 1}, "extra"),
        ({"offset": None}, "offset"),
        ({"offset": 0}, "offset"),
        ({"specversion": "0.3"}, "specversion"),
        ({"time": "yesterday"}, "time"),
        ({"data.accepted_at": "2024-13-01T00:00:00Z"}, "accepted_at"),
    ]
    for change, named in cases:
        with pytest.raises(AssertionError, match=named):
            validate_event(broken(change))
    with pytest.raises(AssertionError, match="no schema"):
        validate_event({**inbound, "type": "helpline.message.inbound.v0"})
