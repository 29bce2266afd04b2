"""Shared fixtures. Real components: a redis-server process per session, the service under uvicorn."""

from __future__ import annotations

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


@pytest.fixture
def service_factory():
    """Start the real service (uvicorn subprocess) with extra env; stopped at teardown."""
    started: list[ServiceProcess] = []

    def _start(env: dict[str, str] | None = None, name: str = "service") -> ServiceProcess:
        svc = ServiceProcess(env=env or {}).start(name)
        started.append(svc)
        return svc

    yield _start
    for svc in started:
        svc.stop()
