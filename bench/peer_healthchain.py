"""Peer for the distinct-patient benchmark: HealthChain's CDS Hooks service (``healthchain`` on PyPI)
answering order-select and order-sign with one fixed card, as its documentation's examples do.

Runs in an environment where healthchain is installed (`pgx-cds bench --peer-python PATH`); not imported
by the service. Paths: /cds-services/{id}, like ours, so the same bodies and URLs are sent to both.
"""

from __future__ import annotations

from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.gateway.cds import CDSHooksConfig
from healthchain.models.responses.cdsresponse import Card, CDSResponse, Source


def create_app():
    app = HealthChainAPI()
    cds = CDSHooksService(config=CDSHooksConfig(base_path=""))
    card = Card(summary="Fixed card", indicator="info", source=Source(label="bench"))

    @cds.hook("order-select", id="pgx-order-select")
    def order_select(request) -> CDSResponse:
        return CDSResponse(cards=[card])

    @cds.hook("order-sign", id="pgx-order-sign")
    def order_sign(request) -> CDSResponse:
        return CDSResponse(cards=[card])

    app.register_service(cds)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app
