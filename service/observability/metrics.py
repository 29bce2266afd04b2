"""Prometheus metrics (README: Metrics reference). One registry per process (multi-worker: each worker
exposes its own; scrape per pod or set PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import functools

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

_LAT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

REQUEST_LATENCY = Histogram(
    "pgx_cds_request_seconds", "HTTP request latency", ["service", "status"], buckets=_LAT_BUCKETS
)
CARDS = Counter("pgx_cds_cards_total", "Cards returned", ["indicator", "rule"])
CACHE = Counter("pgx_cds_cache_total", "Cache lookups", ["cache", "result"])
FHIR_LATENCY = Histogram("pgx_cds_fhir_seconds", "Outbound FHIR call latency", ["resource"], buckets=_LAT_BUCKETS)
FHIR_ERRORS = Counter("pgx_cds_fhir_errors_total", "Outbound FHIR call failures", ["kind"])
REDIS_UP = Gauge("pgx_cds_redis_up", "1 when the last Redis call succeeded")
REDIS_ERRORS = Counter("pgx_cds_redis_errors_total", "Redis calls that failed or timed out (cache bypassed)", ["op"])
REDIS_WRITES_DROPPED = Counter("pgx_cds_redis_writes_dropped_total",
                               "Writes given up after Redis stayed unavailable (bounded queue full, shutdown)", ["kind"])
FEEDBACK = Counter("pgx_cds_feedback_total", "Card feedback received", ["outcome", "rule"])
AUTH_FAILURES = Counter("pgx_cds_auth_failures_total", "Rejected JWTs", ["reason"])
PREFETCH_412 = Counter("pgx_cds_precondition_failed_total", "412 answers: required data unobtainable", ["service"])


@functools.lru_cache(maxsize=4096)
def child(metric, *labels: str):
    """`metric.labels(*labels)`, looked up once per label set (the label sets are bounded: services,
    statuses, indicators, rule ids); prometheus_client's lookup takes a lock and builds tuples per call."""
    return metric.labels(*labels)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
