"""Requests for the router's fixed paths reach their handler without aiohttp's URL
dispatch.

For every request aiohttp's `Application._handle` asks the event loop for its debug
flag (`asyncio.get_event_loop()`: a getpid() syscall on CPython 3.11), walks its
resource index for the path, builds, fills and freezes a match record, and checks for
middlewares: about 230 bytecodes and a syscall, 3% of a streamed request. The router's
routes are fixed strings without middlewares, so the record for each method and path
is built once here and a request whose raw path is one of those strings, exactly,
gets its handler straight away. Everything else (a query string, an escaped or
dot-segment path that yarl would normalise, an `Expect` header, a method or path with
no exact route, an app with middlewares or domain sub-apps, a path added after a resource
that is not a plain path) goes through aiohttp's `_handle` unchanged.

A shared record is safe because it is frozen and the router's handlers only read it
(`request.app`); it reaches into one aiohttp attribute, `Request._match_info`, which
tests through real sockets (tests/integration/test_fast_paths.py) would notice moving.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import MatchedSubAppResource, UrlMappingMatchInfo

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class FastPaths:
    """The server's request handler: exact (method, raw path) pairs first, aiohttp's
    dispatch for the rest."""

    __slots__ = ("_routes", "_slow")

    def __init__(self, app: web.Application, slow: Handler) -> None:
        self._slow = slow
        self._routes: dict[tuple[str, str], tuple[UrlMappingMatchInfo, Handler]] = {}
        resources = list(app.router.resources())
        if app.middlewares or any(isinstance(r, MatchedSubAppResource) for r in resources):
            # A middleware wraps every handler, and a sub-app added with add_domain() is
            # asked before every other resource: aiohttp's dispatch decides everything.
            return
        shadowed: set[str] = set()  # paths with a route for any method ("*")
        for resource in resources:
            if not isinstance(resource, web.PlainResource):
                break  # it may match the paths of those after it: aiohttp decides for them
            path = resource.canonical
            for route in resource:
                key = (route.method, path)
                if route.method == hdrs.METH_ANY:
                    shadowed.add(path)
                elif path not in shadowed and key not in self._routes:
                    # The first route for the method and path, as aiohttp's dispatch takes
                    # them: in the order they were added.
                    match = UrlMappingMatchInfo({}, route)
                    match.add_app(app)
                    match.freeze()
                    self._routes[key] = (match, route.handler)

    def __call__(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        # Not a coroutine: the handler's own is returned for the caller to await, one
        # coroutine fewer a request.
        found = self._routes.get((request.method, request.raw_path))
        if found is None or hdrs.EXPECT in request.headers:
            return self._slow(request)
        request._match_info = found[0]  # type: ignore[attr-defined]
        return found[1](request)
