"""Optional OpenTelemetry tracing, on when `otlp_endpoint` is configured (`pip install 'pgx-cds[otel]'`).

Only server spans are recorded (route, status, latency). Outbound FHIR calls are deliberately NOT
auto-instrumented: their URLs carry patient ids in query strings, and traces must stay free of
identifiers like the logs are. Request headers are not captured.
"""

from __future__ import annotations

from typing import Any

import structlog

log = structlog.get_logger("pgx_cds.tracing")

_EXCLUDED = "healthz,readyz,metrics"


def setup_tracing(app: Any, endpoint: str | None, *, service_version: str) -> Any | None:
    """Instrument the app and return the TracerProvider (or None when tracing is off or unavailable)."""
    if not endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing_unavailable", reason="install pgx-cds[otel] to export traces")
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "pgx-cds", "service.version": service_version}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=_EXCLUDED,
                                       http_capture_headers_server_request=[], exclude_spans=["receive", "send"])
    log.info("tracing_enabled")
    return provider
