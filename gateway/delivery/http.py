"""A JSON-over-HTTP client for helpdesk APIs that speaks in delivery failures.

Every backend needs the same translation: a connection that never opened is
a plain temporary failure (nothing was sent), a timeout or a reset after the
request left is ambiguous (it may have been carried out), and an answer's
status maps through `classify`. Backends then only decide what is vendor
specific (a 422 that means "already exists").
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.delivery.failures import PermanentFailure, TemporaryFailure, classify

USER_AGENT = "helpline/1 (+https://github.com/helpline)"  # never a browser's (RT answers 302)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or the text when it is not JSON, or None when empty


class JsonClient:
    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        basic: tuple[str, str] | None = None,
        auth: aiohttp.BasicAuth | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        sent = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        if basic is not None:
            pair = f"{basic[0]}:{basic[1]}".encode()
            sent["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif auth is not None:
            sent["Authorization"] = auth.encode()
        self._session = aiohttp.ClientSession(
            headers=sent, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        allow: Iterable[int] = (),
    ) -> Answer:
        """The answer, or a DeliveryFailure; statuses in `allow` are answered, not raised."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        sent_headers = dict(headers or {})
        body: bytes | Any = data
        if json is not None:
            body = orjson.dumps(json)
            sent_headers.setdefault("Content-Type", "application/json")
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                params=params,
                headers=sent_headers,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                status, answer_headers = response.status, response.headers
        except aiohttp.ClientConnectorError as err:
            raise TemporaryFailure(f"cannot connect to {url}: {err}", reachable=False) from err
        except (TimeoutError, aiohttp.ClientError) as err:
            raise TemporaryFailure(
                f"{method} {url}: no answer ({type(err).__name__} {err})".strip(), ambiguous=True
            ) from err
        parsed = _parse(raw)
        if status in set(allow):
            return Answer(status, answer_headers, parsed)
        detail = raw[:300].decode("utf-8", "replace") if status >= 300 else ""
        failure = classify(status, answer_headers, f"{method} {path}: {detail}", parsed)
        if failure is not None:
            raise failure
        return Answer(status, answer_headers, parsed)

    async def download(self, url: str, *, limit: int) -> bytes:
        """A file's bytes (an attachment's URL); the API's credentials go only to the
        API's own origin."""
        same_origin = url.startswith(self.base_url + "/")
        session = (
            self._session
            if same_origin
            else aiohttp.ClientSession(
                timeout=self._session.timeout, headers={"User-Agent": USER_AGENT}
            )
        )
        try:
            async with session.get(url) as response:
                failure = classify(response.status, response.headers, f"GET {url}")
                if failure is not None:
                    raise failure
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise PermanentFailure(f"{url}: the file is larger than {limit} bytes")
        except aiohttp.ClientConnectorError as err:
            raise TemporaryFailure(f"cannot connect to {url}: {err}", reachable=False) from err
        except (TimeoutError, aiohttp.ClientError) as err:
            raise TemporaryFailure(f"GET {url}: {type(err).__name__} {err}") from err
        finally:
            if not same_origin:
                await session.close()
        return bytes(data)


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
