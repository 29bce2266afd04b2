"""One access line per request with the request's fields; lines written while serving a request carry its
request id; nothing of one request leaks into the next."""

from __future__ import annotations

import json

from tests.hooks import requests as rq
from tests.hooks.conftest import make_client


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_access_line_carries_the_request_fields_and_nothing_leaks_between_requests(tmp_path, capsys):
    with make_client(feedback_file=tmp_path / "f", log_level="info") as c:
        capsys.readouterr()
        hook = c.post("/cds-services/pgx-order-select", json={**rq.order_select(), "hookInstance": "hi-log-1"})
        # a request naming a fhirServer we may not contact logs a warning while it is served
        refused = c.post("/cds-services/pgx-order-select",
                         json={**rq.order_select(), "hookInstance": "hi-log-2", "fhirServer": "ftp://x.example"})
        health = c.get("/cds-services")
    lines = _lines(capsys.readouterr().out)
    access = [x for x in lines if x.get("event") == "request"]
    assert [a["request_id"] for a in access] == [hook.headers["x-request-id"], refused.headers["x-request-id"],
                                                 health.headers["x-request-id"]]
    first, second, third = access
    assert first["hook_instance"] == "hi-log-1" and first["event_kind"] == "hook_evaluated"
    assert first["cards"] == 1 and first["indicators"] == "critical" and len(first["patient_hash"]) == 24
    assert first["status"] == 200 and first["route"] == "pgx-order-select"
    assert second["hook_instance"] == "hi-log-2"
    warning = next(x for x in lines if x.get("event") == "fhir_server_refused")
    assert warning["request_id"] == refused.headers["x-request-id"] and warning["hook_instance"] == "hi-log-2"
    assert "hook_instance" not in third and "patient_hash" not in third  # nothing left over
