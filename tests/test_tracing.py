"""Optional OpenTelemetry: spans reach a real OTLP/HTTP receiver, and carry no patient identifiers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from tests.hooks import requests as rq


class _Collector(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        _Collector.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_spans_exported_without_identifiers(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        app = create_app(Settings(otlp_endpoint=endpoint, feedback_file=tmp_path / "f", log_level="warning"))
        assert app.state.tracer_provider is not None
        with TestClient(app) as c:
            assert c.post("/cds-services/pgx-order-select", json=rq.order_select()).status_code == 200
            app.state.tracer_provider.force_flush()
        paths = [p for p, _ in _Collector.bodies]
        assert "/v1/traces" in paths
        exported = b"".join(b for _, b in _Collector.bodies)
        assert b"/cds-services/{service_id}" in exported or b"pgx-order-select" in exported
        assert b"pgx-demo-1" not in exported and b"*2/*2" not in exported
    finally:
        server.shutdown()


def test_no_endpoint_no_tracing(tmp_path):
    assert create_app(Settings(feedback_file=tmp_path / "f", log_level="warning")).state.tracer_provider is None
