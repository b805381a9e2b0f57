"""The request bodies of /v1, declared once; pydantic turns mistakes into field errors."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FromIn(Body):
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    visitor_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one_handle(self) -> FromIn:
        if not (self.email or self.phone or self.visitor_id):
            raise ValueError("give at least one of email, phone or visitor_id")
        return self


class MessageIn(Body):
    sender: FromIn = Field(alias="from")
    subject: str | None = Field(default=None, max_length=998)
    text: str = Field(min_length=1)
    html: str | None = None
    external_id: str | None = Field(default=None, min_length=1, max_length=200)
    thread: str | None = Field(default=None, min_length=1, max_length=500)
    sent_at: datetime | None = None


class AuthorIn(Body):
    kind: Literal["human", "bot", "system"] = "human"
    name: str | None = Field(default=None, max_length=200)


class ReplyIn(Body):
    text: str = Field(min_length=1)
    html: str | None = None
    internal: bool = False
    author: AuthorIn = Field(default_factory=AuthorIn)


class TransitionIn(Body):
    reason: str | None = Field(default=None, max_length=500)
