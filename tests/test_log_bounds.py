"""Issue 12 "logs stay bounded" and issue 16 "log noise": whatever a request carries, its log lines stay
small; a fhirServer we may not contact is logged once, and a warning only when data was needed from it."""

from __future__ import annotations

import json

from service.observability.logging import MAX_FIELD_CHARS, MAX_FIELD_ITEMS, configure_logging
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

SELECT = "/cds-services/pgx-order-select"


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _assert_bounded(value, where: str) -> None:
    if isinstance(value, str):
        assert len(value) <= MAX_FIELD_CHARS + 32, f"{where}: {len(value)} chars"
    elif isinstance(value, list):
        assert len(value) <= MAX_FIELD_ITEMS + 1, f"{where}: {len(value)} items"
        for i, v in enumerate(value):
            _assert_bounded(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        assert len(value) <= MAX_FIELD_ITEMS + 1, f"{where}: {len(value)} keys"
        for k, v in value.items():
            _assert_bounded(v, f"{where}.{k}")


def test_every_field_of_every_line_is_capped(capsys):
    import structlog

    configure_logging("info")
    capsys.readouterr()
    structlog.get_logger("t").info("big", text="x" * 400_000, items=list(range(3000)),
                                   nested={"k": ["y" * 1000] * 50, **{f"f{i}": i for i in range(100)}})
    (line,) = _lines(capsys.readouterr().out)
    for key, value in line.items():
        _assert_bounded(value, key)
    assert line["text"].startswith("xxx") and "+399744 chars" in line["text"]  # says how much was cut
    assert line["items"][:3] == [0, 1, 2]


def test_hook_instance_longer_than_a_uuid_allows_is_a_clear_400(tmp_path, capsys):
    with make_client(feedback_file=tmp_path / "f", log_level="info") as c:
        capsys.readouterr()
        r = c.post(SELECT, json={**rq.order_select(), "hookInstance": "h" * 400_000})
        assert r.status_code == 400
        assert "hookInstance" in r.json()["issue"][0]["diagnostics"]
        assert c.post(SELECT, json={**rq.order_select(), "hookInstance": "h" * 128}).status_code == 200
    out = capsys.readouterr().out
    assert len(out) < 10_000, "a 400 kB hookInstance must not reach the log"


def test_a_request_with_3000_orders_logs_bounded_fields(tmp_path, capsys):
    orders = [{"resourceType": "MedicationRequest", "id": f"o{i}", "status": "draft", "intent": "order",
               "medicationCodeableConcept": {"coding": [{"system": rq.RXNORM, "code": "32968"}]}}
              for i in range(3000)]
    body = rq.order_sign(orders=orders)
    with make_client(feedback_file=tmp_path / "f", log_level="info") as c:
        capsys.readouterr()
        r = c.post("/cds-services/pgx-order-sign", json=body)
        assert r.status_code == 200 and len(r.json()["cards"]) == 3000
    lines = _lines(capsys.readouterr().out)
    access = next(x for x in lines if x.get("event") == "request")
    assert access["cards"] == 3000
    assert access["indicators"].count(",") <= 21 and access["indicators"].endswith("(+2980)")
    for line in lines:
        for key, value in line.items():
            _assert_bounded(value, key)


def test_refused_fhir_server_logged_once_at_info_and_warned_only_when_data_was_needed(tmp_path, capsys):
    sandbox_fhir = "http://launch.smarthealthit.org/v/r4/fhir"  # plain http: never contacted in production
    with make_client(feedback_file=tmp_path / "f", log_level="info") as c:
        capsys.readouterr()
        for _ in range(3):  # complete prefetch: answered, nothing needed from the server
            assert c.post(SELECT, json=rq.order_select(fhirServer=sandbox_fhir)).status_code == 200
        lines = _lines(capsys.readouterr().out)
        refused = [x for x in lines if x.get("event", "").startswith("fhir_server_refused")]
        assert [(x["event"], x["level"]) for x in refused] == [("fhir_server_refused", "info")]
        assert refused[0]["fhir_host"] == "launch.smarthealthit.org"  # which server, for the operator
        assert not [x for x in lines if x["level"] in ("warning", "error")]
        # now data is needed from it: a warning
        assert c.post(SELECT, json=rq.order_select(fhirServer=sandbox_fhir, prefetch=False)).status_code == 412
        lines = _lines(capsys.readouterr().out)
        warned = [x for x in lines if x["level"] == "warning"]
        assert [x["event"] for x in warned] == ["fhir_server_refused_data_needed"]
        # another server: logged once too
        assert c.post(SELECT, json=rq.order_select(fhirServer="http://other.example/fhir")).status_code == 200
        assert [x["event"] for x in _lines(capsys.readouterr().out) if x.get("event") == "fhir_server_refused"] == [
            "fhir_server_refused"]
