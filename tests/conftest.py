"""Shared fixtures. Real components: a redis-server process per session, the service under uvicorn."""

from __future__ import annotations

import re

import pytest

from tests.helpers import RedisProcess, ServiceProcess, free_port


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free port for the whole session (tests may stop/start it)."""
    r = RedisProcess(port=free_port())
    r.start()
    yield r
    r.stop()


@pytest.fixture
def redis_url(redis_server):
    if redis_server.proc is None:
        redis_server.start()
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


# What must never appear in a log line (issue 6): JWTs, bearer tokens, star-allele diplotypes, and the
# synthetic patients' ids used by the end-to-end tests.
_PHI_PATTERNS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}"),
    re.compile(r"[Bb]earer\s+\S"),
    re.compile(r"\*\d+[A-Z]?(\.\d+)?\s*/\s*\*\d+"),
    re.compile(r"pgx-demo-1|pgx-ada-cyp2c19-pm|pgx-dana-dpyd|access_token"),
]


def scan_log_for_phi(text: str) -> list[str]:
    return [f"{p.pattern!r} in: {line[:200]}" for line in text.splitlines() for p in _PHI_PATTERNS if p.search(line)]


@pytest.fixture
def service_factory():
    """Start the real service (uvicorn subprocess) with extra env; stopped at teardown, and then its
    whole log output is scanned: no token, JWT, diplotype or patient id may appear in it."""
    started: list[ServiceProcess] = []

    def _start(env: dict[str, str] | None = None, name: str = "service") -> ServiceProcess:
        """`{url}` in an env value becomes the service's own URL (e.g. PGX_CDS_PUBLIC_BASE_URL)."""
        svc = ServiceProcess(env=env or {})
        svc.env = {k: v.replace("{url}", svc.url) for k, v in svc.env.items()}
        svc.start(name)
        started.append(svc)
        return svc

    yield _start
    for svc in started:
        svc.stop()
    leaks = [hit for svc in started for hit in scan_log_for_phi(svc.logs())]
    assert not leaks, "sensitive data in service logs:\n" + "\n".join(leaks[:10])
