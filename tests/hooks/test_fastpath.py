"""The fast path (service/hooks/fastpath.py) is a setting, and it answers errors with the app's own
exception handlers: the same answers as the full stack (this whole directory runs both ways)."""

from __future__ import annotations

import pytest
from fastapi.responses import JSONResponse

import service.hooks.router as router
from service.hooks.fastpath import HookFastPath
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

SELECT = "/cds-services/pgx-order-select"


@pytest.mark.parametrize("on", [True, False])
def test_the_setting_turns_the_fast_path_on_and_off(tmp_path, on):
    with make_client(feedback_file=tmp_path / "f", hook_fast_path=on) as c:
        assert any(m.cls is HookFastPath for m in c.app.user_middleware) is on


def test_the_fast_path_is_on_by_default(monkeypatch):
    monkeypatch.delenv("PGX_CDS_HOOK_FAST_PATH", raising=False)
    from service.config import Settings

    assert Settings().hook_fast_path is True


def test_the_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv("PGX_CDS_HOOK_FAST_PATH", "false")
    from service.config import Settings

    assert Settings().hook_fast_path is False


class _Teapot(Exception):
    pass


class _SubTeapot(_Teapot):
    pass


@pytest.mark.parametrize("asynchronous", [True, False])
def test_errors_are_answered_by_the_apps_own_handlers(tmp_path, monkeypatch, hook_fast_path, asynchronous):
    """A handler registered on the app (after the middleware was added) answers an exception raised in a
    hook call, looked up by the exception's class hierarchy, whichever path the call takes; an exception
    without a handler is a 500 OperationOutcome."""
    raised: list[type[Exception]] = []

    async def failing(*_args):
        raise raised[-1]()

    monkeypatch.setattr(router, "run_hook", failing)  # both paths call it
    with make_client(feedback_file=tmp_path / "f") as c:
        if asynchronous:
            async def teapot(_request, exc):
                return JSONResponse({"handled": type(exc).__name__}, status_code=418)
        else:
            def teapot(_request, exc):
                return JSONResponse({"handled": type(exc).__name__}, status_code=418)
        c.app.add_exception_handler(_Teapot, teapot)
        c.app.middleware_stack = None  # rebuilt with the handler (as an app configured before start-up)
        for exc, status in [(_Teapot, 418), (_SubTeapot, 418), (RuntimeError, 500)]:
            raised.append(exc)
            r = c.post(SELECT, json=rq.order_select())
            assert r.status_code == status, r.text
            if status == 418:
                assert r.json() == {"handled": exc.__name__}
            else:
                assert r.json()["resourceType"] == "OperationOutcome"
