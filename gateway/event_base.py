"""What every event data model shares: frozen, strict, and timestamps as the stream writes them.

Apart from gateway.events so that the catalogue's models can live in several modules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema

from gateway.times import rfc3339

Timestamp = Annotated[
    datetime,
    PlainSerializer(rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
