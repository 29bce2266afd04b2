"""Process-wide GC tuning belongs to the served process (`pgx-cds serve`), not to creating the app."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.runtime import GC_THRESHOLDS, served_app


def _restore(thresholds, frozen_before):
    gc.set_threshold(*thresholds)
    if gc.get_freeze_count() > frozen_before:
        gc.unfreeze()


def test_creating_and_running_the_app_leaves_the_process_gc_alone(tmp_path):
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    try:
        app = create_app(Settings(feedback_file=tmp_path / "fb.ndjson"))
        with TestClient(app) as client:  # the lifespan runs
            assert client.get("/healthz").status_code == 200
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen
    finally:
        _restore(before, frozen)


def test_the_served_app_tunes_its_process_gc(monkeypatch, tmp_path):
    monkeypatch.setenv("PGX_CDS_FEEDBACK_FILE", str(tmp_path / "fb.ndjson"))
    from service.config import get_settings

    get_settings.cache_clear()
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    gc.set_threshold(700, 10, 10)
    try:
        app = served_app()
        assert app.state.knowledge is not None
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        get_settings.cache_clear()
        _restore(before, frozen)
