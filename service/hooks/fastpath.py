"""The hook-call fast path: an ASGI middleware that sends a service call (POST /cds-services/{id})
straight to its handler, skipping the router, CORS and Starlette's exception middleware, which together
cost as much CPU as the hook evaluation itself (measured with py-spy under the benchmark load).

On by default; `PGX_CDS_HOOK_FAST_PATH=false` turns it off (every request takes the full stack). The
answers are the same either way (tests/hooks runs whole both ways): an exception is answered by the
app's own exception handler for its type (the one the full stack would use), and one without a handler
propagates to the outer middleware, which answers 500. A request carrying an Origin header (a browser:
the CDS Hooks sandbox) takes the full stack, so CORS is applied exactly as configured.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.hooks import router

_PREFIX = "/cds-services/"


def route_path(scope) -> str:
    """The path the app routes on: without the `root_path` prefix a proxy-aware server (uvicorn
    --root-path) puts in front of it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _handler_for(handlers: Mapping[Any, Callable], exc: Exception) -> Callable | None:
    for cls in type(exc).__mro__:  # as Starlette's exception middleware looks it up
        if cls in handlers:
            return handlers[cls]
    return None


class HookFastPath:
    """`handlers` is the app's exception handler mapping (`app.exception_handlers`, read at each error, so
    handlers registered after the middleware was added count too)."""

    def __init__(self, app, handlers: Mapping[Any, Callable]) -> None:
        self.app = app
        self.handlers = handlers

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = route_path(scope)
            if path.startswith(_PREFIX):
                service_id = path[len(_PREFIX):]
                if service_id and "/" not in service_id and not any(k == b"origin" for k, _ in scope["headers"]):
                    scope["path_params"] = {"service_id": service_id}
                    request = Request(scope, receive)
                    try:
                        response = await router.call_service(request)  # looked up per call (tests wrap it)
                    except Exception as exc:
                        handler = _handler_for(self.handlers, exc)
                        if handler is None:
                            raise
                        if inspect.iscoroutinefunction(handler):
                            response = await handler(request, exc)
                        else:
                            response = await run_in_threadpool(handler, request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
