"""Write docs/schemas/<event type>.json: one JSON Schema (draft 2020-12) per stream event type.

Each schema describes one event as GET /v1/stream serves it: the CloudEvents
envelope with helpline's `offset` extension, and `data` as the pydantic model
of its type declares it (gateway.events.DATA_MODELS). Run it after changing an
event model:

    .venv/bin/python docs/generate_schemas.py

tests/unit/test_docs.py fails while the committed files differ from what this
script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gateway.events import DATA_MODELS, EventType

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ULID = "[0-9A-HJKMNP-TV-Z]{26}"

ENVELOPE_DESCRIPTIONS = {
    "offset": "Position in the stream; strictly increasing in commit order (extension attribute).",
    "specversion": "The CloudEvents version.",
    "id": "Unique per event; a consumer deduplicates on it.",
    "source": (
        "Where the event came from: /api/TOKEN_NAME, /connectors/NAME, /backends/NAME or /core."
    ),
    "type": "The event type; a changed data shape is a new .vN type.",
    "time": "When helpline committed the event: UTC, milliseconds, Z.",
    "subject": "The conversation the event belongs to; for contact.* events, the contact.",
    "datacontenttype": "Always application/json: data is a JSON object.",
    "data": "The type's payload.",
}


def _hoist(model_schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The model's own $defs moved to the envelope's root, where its #/$defs/ refs then point."""
    defs = dict(model_schema.pop("$defs", {}))
    if name in defs:
        raise ValueError(f"{name} is both the data model and one of its own $defs")
    defs[name] = model_schema
    return defs


def _subject_prefix(event_type: EventType) -> str:
    return "ct" if event_type.value.startswith("helpline.contact.") else "conv"


def event_schema(event_type: EventType) -> dict[str, Any]:
    """The JSON Schema of one event type, envelope and data."""
    model = DATA_MODELS[event_type]
    name = model.__name__
    data = model.model_json_schema(by_alias=True, mode="serialization")
    defs = _hoist(data, name)
    properties: dict[str, Any] = {
        "offset": {"type": "integer", "minimum": 1},
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "pattern": f"^evt_{ULID}$"},
        "source": {"type": "string", "pattern": "^/((api|connectors|backends)/.+|core)$"},
        "type": {"const": event_type.value},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string", "pattern": f"^{_subject_prefix(event_type)}_{ULID}$"},
        "datacontenttype": {"const": "application/json"},
        "data": {"$ref": f"#/$defs/{name}"},
    }
    for key, text in ENVELOPE_DESCRIPTIONS.items():
        properties[key] = {"description": text, **properties[key]}
    return {
        "$schema": DIALECT,
        "$id": f"urn:helpline:schema:{event_type.value}",
        "title": event_type.value,
        "description": (
            f"One {event_type.value} event as the stream serves it (docs/stream.md): "
            f"a CloudEvents 1.0 envelope with the offset extension; data is {name}."
        ),
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
        "$defs": defs,
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write every event type's schema into out_dir; remove schema files of types that are gone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type in DATA_MODELS:
        path = out_dir / f"{event_type.value}.json"
        path.write_text(render(event_schema(event_type)), encoding="utf-8")
        written.append(path)
    for stale in set(out_dir.glob("helpline.*.json")) - set(written):
        stale.unlink()
    return written


def main() -> int:
    for path in write_schemas(SCHEMA_DIR):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
