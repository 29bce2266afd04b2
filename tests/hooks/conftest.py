from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


@pytest.fixture(scope="module", autouse=True, params=[True, False], ids=["fast-path", "full-stack"])
def hook_fast_path(request):
    """Every test in tests/hooks runs twice: hook calls through the fast path (service/hooks/fastpath.py,
    the default) and through the full framework stack (PGX_CDS_HOOK_FAST_PATH=false). Set in the
    environment, so apps built from Settings() and service processes started by a test both see it.
    Module scope: module-scoped apps are built after it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PGX_CDS_HOOK_FAST_PATH", "true" if request.param else "false")
    yield request.param
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def _knowledge_loaded_once():
    """The knowledge base of one directory, loaded once per test session and shared by the apps the tests
    build (it is read-only; loading it is most of an app's start-up, and every test here builds apps
    twice). A directory a test writes (tmp_path) is its own key; its files' mtimes are part of it."""
    import service.main as main

    real = main.load_knowledge
    loaded: dict = {}

    def load(path):
        from pathlib import Path

        p = Path(path).resolve()
        key = (p, tuple(sorted((str(f), f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file())))
        if key not in loaded:
            loaded[key] = real(path)
        return loaded[key]

    mp = pytest.MonkeyPatch()
    mp.setattr(main, "load_knowledge", load)
    yield
    mp.undo()


def make_client(**overrides) -> TestClient:
    settings = Settings(**overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path):
    with make_client(feedback_file=tmp_path / "fb.ndjson") as c:
        yield c
