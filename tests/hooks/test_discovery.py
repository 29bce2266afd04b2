"""Checklist 1-5: discovery."""

import re

SPEC_CONTEXT_TOKENS = {"{{context.patientId}}", "{{context.userId}}", "{{context.encounterId}}",
                       "{{userPractitionerId}}", "{{userPractitionerRoleId}}", "{{userPatientId}}", "{{userRelatedPersonId}}"}


def test_discovery_lists_three_services(client):
    r = client.get("/cds-services")
    assert r.status_code == 200
    services = r.json()["services"]
    assert {(s["id"], s["hook"]) for s in services} == {
        ("pgx-order-select", "order-select"), ("pgx-order-sign", "order-sign"), ("pgx-patient-view", "patient-view")}


def _no_empty(value, path="$"):
    assert value is not None, path
    if isinstance(value, (str, list, dict)):
        assert len(value) > 0, path
    if isinstance(value, dict):
        for k, v in value.items():
            _no_empty(v, f"{path}.{k}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            _no_empty(v, f"{path}[{i}]")


def test_every_service_has_required_fields_and_no_empty_values(client):
    body = client.get("/cds-services").json()
    _no_empty(body)
    for s in body["services"]:
        for field in ("hook", "id", "description", "title", "usageRequirements", "prefetch"):
            assert s.get(field), (s["id"], field)


def test_prefetch_templates_stay_in_the_2_0_query_subset(client):
    for s in client.get("/cds-services").json()["services"]:
        assert "pgxObservations" in s["prefetch"]
        for key, template in s["prefetch"].items():
            tokens = set(re.findall(r"\{\{[^}]*\}\}", template))
            assert tokens <= SPEC_CONTEXT_TOKENS, (key, tokens)
            path, _, query = template.partition("?")
            assert re.fullmatch(r"[A-Z][A-Za-z]+(/\{\{context\.\w+\}\})?", path), template
            for param in filter(None, query.split("&")):
                name, _, value = param.partition("=")
                base = name.split(":")[0]
                if ":" in name:
                    assert name.endswith(":in"), f"only the :in modifier is allowed: {param}"
                assert base.startswith("_") is False or base in ("_count", "_sort"), param
                assert value, param


def test_every_advertised_service_answers_post(client):
    for s in client.get("/cds-services").json()["services"]:
        r = client.post(f"/cds-services/{s['id']}", json={})
        assert r.status_code == 400  # exists (not 404) and rejects an empty body


def test_unknown_service_is_404(client):
    assert client.post("/cds-services/nope", json={}).status_code == 404
    assert client.post("/cds-services/nope/feedback", json={}).status_code == 404


def test_discovery_validates_against_tools_ig_model_shape(client):
    """Fields allowed by the CDSHooksServices logical model (transcribed: hook,title,description,id,prefetch,usageRequirements,extension)."""
    allowed = {"hook", "title", "description", "id", "prefetch", "usageRequirements", "extension"}
    for s in client.get("/cds-services").json()["services"]:
        assert set(s) <= allowed
        assert all(isinstance(v, str) for v in s["prefetch"].values())
