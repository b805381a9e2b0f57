"""The aiohttp application: core routes, limits, and the routes components own.

aiohttp freezes its router when the server starts, but components start and
stop while it runs (reload), so their paths live in a table of their own
behind one catch-all route, and leave with their owner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.web import api, backends, dashboard, health, reports
from gateway.web.context import CONTEXT, WebContext
from gateway.web.problems import problem_middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RESERVED = ("/v1/", "/healthz", "/readyz", "/metrics", "/dashboard")


class ComponentRoutes:
    """Path prefixes owned by components, looked up per request."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[str, Handler]] = {}

    def add(self, owner: str, prefix: str, handler: Handler) -> None:
        if not prefix.startswith("/") or prefix.startswith(RESERVED) or prefix == "/":
            raise ValueError(f"{prefix!r} is not a path a component may own")
        holder = self._routes.get(prefix)
        if holder is not None and holder[0] != owner:
            raise ValueError(f"{prefix} is already served by {holder[0]}")
        self._routes[prefix] = (owner, handler)

    def remove_owner(self, owner: str) -> None:
        for prefix in [p for p, (o, _) in self._routes.items() if o == owner]:
            del self._routes[prefix]

    def adder(self, owner: str) -> Callable[[str, Handler], None]:
        return lambda prefix, handler: self.add(owner, prefix, handler)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        best = ""
        for prefix in self._routes:
            if (path == prefix or path.startswith(prefix.rstrip("/") + "/")) and len(prefix) > len(
                best
            ):
                best = prefix
        if not best:
            allowed = await _core_methods(request)
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            raise web.HTTPNotFound(reason="Not Found", text=f"nothing is served at {path}")
        return await self._routes[best][1](request)


async def _core_methods(request: web.Request) -> set[str]:
    """The methods a core route serves at this path, so a wrong method is 405, not 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical == "/{tail}":
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return allowed


def build_app(ctx: WebContext, routes: ComponentRoutes) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware],
        client_max_size=ctx.config.http.max_body_size,
    )
    app[CONTEXT] = ctx
    api.add_routes(app)
    health.add_routes(app)
    reports.add_routes(app)
    backends.add_routes(app)
    dashboard.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", routes.dispatch)

    async def on_shutdown(app: web.Application) -> None:
        ctx.shutting_down = True
        ctx.notifier.wake_all()

    app.on_shutdown.append(on_shutdown)
    return app
