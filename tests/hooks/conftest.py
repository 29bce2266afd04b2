from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def make_client(**overrides) -> TestClient:
    settings = Settings(**overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path):
    with make_client(feedback_file=tmp_path / "fb.ndjson") as c:
        yield c
