"""RFC 9457 problem documents: every refusal says what was wrong and where.

One middleware turns the core's errors, aiohttp's own HTTP errors and any
surprise into a problem document, so no handler formats an error itself and
no failure escapes as an HTML page or a dropped connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError

from gateway.errors import IdempotencyConflict, InvalidInput, NotFound
from gateway.store import Overloaded, StoreClosed, StoreUnavailable
from gateway.web.context import context

PROBLEM_TYPE = "urn:helpline:problem:"
RETRY_AFTER_SECONDS = "1"

log = structlog.get_logger("gateway.web")


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


def validation_problem(err: ValidationError) -> web.Response:
    errors = []
    for item in err.errors():
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        errors.append({"field": _field(item["loc"]), "message": message})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(400, "invalid-body", "The request body is not valid", summary, errors=errors)


def _from_http_error(err: web.HTTPException) -> web.Response:
    if isinstance(err, web.HTTPRequestEntityTooLarge):
        return problem(413, "body-too-large", "Request body too large", err.text or "")
    slug = (err.reason or "error").lower().replace(" ", "-")
    if isinstance(err, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(err.allowed_methods))
        return problem(
            405,
            "method-not-allowed",
            "Method Not Allowed",
            f"{err.method} is not served here; use {allowed}",
            headers={"Allow": allowed},
        )
    headers = {
        k: v
        for k, v in err.headers.items()
        if k.lower() in {"allow", "retry-after", "www-authenticate"}
    }
    detail = err.text if err.text and not err.text.startswith(f"{err.status}:") else err.reason
    return problem(err.status, slug, err.reason, detail or err.reason, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _translated(request, handler)
    if response.status == 401 or response.status >= 500:
        log.warning(
            "http.refused",
            status=response.status,
            method=request.method,
            path=request.path,
            client=context(request).proxies.client(request),
        )
    return response


async def _translated(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return _from_http_error(err)
    except ValidationError as err:
        return validation_problem(err)
    except InvalidInput as err:
        return problem(
            400,
            "invalid-request",
            "The request is not valid",
            str(err),
            errors=[{"field": err.field, "message": err.message}],
        )
    except IdempotencyConflict as err:
        return problem(422, "idempotency-key-reused", "Idempotency key reused", str(err))
    except NotFound as err:
        return problem(404, "not-found", "Not Found", str(err))
    except Overloaded as err:
        return problem(
            503,
            "overloaded",
            "Too many requests waiting for storage",
            f"{err}; retry shortly",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    except (StoreUnavailable, StoreClosed) as err:
        return problem(
            503,
            "store-unavailable",
            "Cannot store now",
            f"{err}; retry shortly",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    except Exception:
        log.exception("http.unhandled", path=request.path, method=request.method)
        return problem(
            500,
            "internal",
            "Internal error",
            "helpline failed to handle this request; retry it with the same "
            "Idempotency-Key, which cannot store it twice",
        )
