"""Zammad's two ticket searches, as the fake answers them (reference §4.4).

`condition` is the SQL selector (selector/sql.rb): synchronous, sees every committed ticket.
Plain `query` goes to the search index, which Zammad fills asynchronously (◐ lag modelled by
`search_index_lag`). Used by FakeZammad's `/tickets/search` route.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.fakes.zammad_state import (
    ARTICLE_COLUMNS,
    TICKET_COLUMNS,
    USER_COLUMNS,
    Ctx,
    ZammadError,
    ZammadState,
    _text,
)  # fmt: skip

OPERATORS = re.compile(
    r"^(has changed|is|is not|contains|contains (not|all|one|all not|one not)|today"
    r"|(after|before) \(absolute\)|(within next|within last|after|before|till|from) \(relative\)"
    r"|is in working time|is not in working time)$"
)


def nested_params(query: dict[str, str]) -> dict[str, Any]:
    """Rails' bracket params (`condition[ticket.x][operator]=is`) into nested dicts."""
    out: dict[str, Any] = {}
    for key, value in query.items():
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts:
            node[parts[-1]] = value
    return out


class ZammadSearch(ZammadState):
    """The selector and the lagging index over the fake's state (call under the lock)."""

    def _indexed(self, tickets: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
        """◐ The search index: sees a ticket only `search_index_lag` s after it was created;
        `attr:value` matches an attribute, anything else is a substring of title or number."""
        now, q = self.clock(), query.strip().lower()
        scoped = re.match(r'^([\w.]+):"?(.*?)"?$', q)
        out = []
        for t in tickets:
            if now - t["_born"] < self.search_index_lag:
                continue
            if scoped and scoped.group(1) in TICKET_COLUMNS + self.ticket_attributes:
                hit = _text(t.get(scoped.group(1)) or "").lower() == scoped.group(2)
            else:
                hit = q in str(t["title"] or "").lower() or q in str(t["number"])
            if hit:
                out.append(t)
        return out

    def _select(
        self, tickets: list[dict[str, Any]], condition: Any, ctx: Ctx
    ) -> list[dict[str, Any]]:
        """The SQL selector (selector/sql.rb): conditions ANDed; the `article.*` ones must hold
        on one joined article; an unknown column is the database's error (422)."""
        if isinstance(condition, dict) and isinstance(condition.get("conditions"), list):
            items = [(c.get("name", ""), c) for c in condition["conditions"] if isinstance(c, dict)]
        elif isinstance(condition, dict):
            items = [(k, v) for k, v in condition.items() if isinstance(v, dict)]
        else:
            raise ZammadError(422, "Invalid condition")
        columns = {"ticket": TICKET_COLUMNS + self.ticket_attributes,
                   "article": ARTICLE_COLUMNS, "customer": USER_COLUMNS}  # fmt: skip
        tests: dict[str, list[Callable[[dict[str, Any]], bool]]] = {k: [] for k in columns}
        for name, spec in items:
            table, _, attr = str(name).partition(".")
            if not attr:
                continue
            if table not in columns:
                raise ZammadError(500, f"invalid selector {table}, {attr}", human=False)
            op = str(spec.get("operator", ""))
            if not OPERATORS.match(op):
                raise ZammadError(
                    500, f"Invalid block_condition, operator {op} is invalid", human=False
                )
            if op not in ("is", "is not", "contains", "contains not"):
                raise ZammadError(500, f"fake zammad: operator '{op}' is not modelled", human=False)
            if "value" not in spec and not spec.get("pre_condition"):
                return tickets  # ◐ InvalidCondition: the selector yields nil, so no filter at all
            if attr not in columns[table]:
                raise self._db_error(f"column {table}s.{attr} does not exist", ctx)
            tests[table].append(self._predicate(attr, op, spec.get("value")))

        def match(t: dict[str, Any]) -> bool:
            customer = self.users_[t["customer_id"]]
            arts = [a for a in self.articles_.values() if a["ticket_id"] == t["id"]]
            return (
                all(f(t) for f in tests["ticket"])
                and all(f(customer) for f in tests["customer"])
                and (not tests["article"] or any(all(f(a) for f in tests["article"]) for a in arts))
            )

        return [t for t in tickets if match(t)]

    @staticmethod
    def _predicate(attr: str, op: str, value: Any) -> Callable[[dict[str, Any]], bool]:
        values = [_text(v) for v in (value if isinstance(value, list) else [value])]

        def check(row: dict[str, Any]) -> bool:
            have = row.get(attr)
            if op in ("contains", "contains not"):
                inside = have is not None and values[0].lower() in _text(have).lower()
                return inside if op == "contains" else have is not None and not inside
            if value is None:  # `is` nil → IS NULL
                return (have is None) == (op == "is")
            hit = have is not None and _text(have) in values
            hit = hit or ("" in values and have is None)
            return hit if op == "is" else not hit

        return check

    @staticmethod
    def _db_error(message: str, ctx: Ctx) -> ZammadError:
        """ActiveRecord::StatementInvalid → 422; only admins see the database's text."""
        if ctx.admin:
            return ZammadError(422, f"PG::UndefinedColumn: ERROR:  {message}", human=False)
        return ZammadError(
            422, "Error ID fake0001: Please contact your administrator.", human=False
        )
