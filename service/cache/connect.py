"""redis-py clients for every Redis deployment a hospital runs, chosen by the URL's scheme.

- `redis://`, `rediss://` (TLS), `unix://`: one server, redis-py's own URL format.
- `redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db][?sentinel_password=..]`
  (`rediss+sentinel://` for TLS to the master): Redis Sentinel; the sentinels are asked for the current
  master and redis-py follows a failover.
- `redis+cluster://[[user]:password@]host:port[/?...]` (`rediss+cluster://` for TLS): Redis Cluster; any
  node seeds the slot map.

The password in a URL is never logged; errors name the scheme or the part that is wrong, not the URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, Any], dict[str, Any]]:
    """(sentinel addresses, master name, db, master connection kwargs, sentinel connection kwargs)."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("Sentinel URL: each sentinel must be host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("Sentinel URL: the path must be /<master name>[/<db>]")
    master = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            master["username"] = unquote(user)
        if password:
            master["password"] = unquote(password)
    if parts.scheme.startswith("rediss"):
        master["ssl"] = True
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sentinel = {"password": query["sentinel_password"]} if "sentinel_password" in query else {}
    return sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, master, sentinel


def _cluster_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return scheme.replace("+cluster", "") + "://" + rest


def async_client(url: str, *, timeout_s: float) -> Any:
    """An asyncio redis-py client for the URL, every socket operation bounded by `timeout_s`."""
    scheme = url.split("://", 1)[0].lower()
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if scheme in SENTINEL_SCHEMES:
        from redis.asyncio.sentinel import Sentinel

        sentinels, name, db, master, sentinel = _sentinel_parts(url)
        manager = Sentinel(sentinels, sentinel_kwargs={**timeouts, **sentinel}, **timeouts)
        return manager.master_for(name, db=db, retry_on_timeout=False, **master)
    if scheme in CLUSTER_SCHEMES:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(_cluster_url(url), health_check_interval=10, **timeouts)
    import redis.asyncio as aioredis

    return aioredis.from_url(url, health_check_interval=10, retry_on_timeout=False, **timeouts)


def sync_client(url: str, *, timeout_s: float) -> Any:
    """The same for blocking use (CLI commands)."""
    scheme = url.split("://", 1)[0].lower()
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if scheme in SENTINEL_SCHEMES:
        from redis.sentinel import Sentinel

        sentinels, name, db, master, sentinel = _sentinel_parts(url)
        return Sentinel(sentinels, sentinel_kwargs={**timeouts, **sentinel}, **timeouts).master_for(
            name, db=db, **master)
    if scheme in CLUSTER_SCHEMES:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(_cluster_url(url), **timeouts)
    import redis

    return redis.Redis.from_url(url, **timeouts)
